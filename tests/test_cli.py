"""The CLI as a user meets it: init, validate, models list, and bad input that exits 2 without a traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def tuneloop(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tuneloop.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300
    )


def test_init_writes_a_config_that_validates_once_its_data_exists(tmp_path):
    assert tuneloop("init", "my.yaml", cwd=tmp_path).returncode == 0
    text = (tmp_path / "my.yaml").read_text()
    assert "# " in text and "train_file: data/train.jsonl" in text
    missing = tuneloop("validate", "my.yaml", cwd=tmp_path)
    assert missing.returncode != 0 and "data/train.jsonl: no such file" in missing.stderr
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "train.jsonl").write_text('{"prompt": "a", "completion": "b"}\n')
    assert tuneloop("validate", "my.yaml", cwd=tmp_path).returncode == 0
    assert tuneloop("init", "my.yaml", cwd=tmp_path).returncode != 0  # no silent overwrite


def test_wrong_key_exits_2_with_one_clear_message(tmp_path):
    (tmp_path / "c.yaml").write_text("data:\n  train_file: t.jsonl\ntrain:\n  epoch: 3\n")
    result = tuneloop("validate", "c.yaml", "--set", "model.dtype=bf17", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "train.epoch: unknown key. Did you mean 'train.epochs'?" in result.stderr
    assert "model.dtype" in result.stderr and "'bf17'" in result.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"prompt": "a", "completion": "b"}\n{"prompt": "a", "completion": \n', "train.jsonl:2: not valid JSON"),
        ('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n', "train.jsonl:2: missing field(s) ['completion']"),
        (
            '{"prompt": "a", "completion": "b"}\n{"prompt": "", "completion": "b"}\n',
            "train.jsonl:2: field 'prompt' is empty",
        ),
    ],
)
def test_malformed_row_is_reported_as_file_line_reason(tmp_path, content, expected):
    (tmp_path / "train.jsonl").write_text(content)
    (tmp_path / "c.yaml").write_text("data:\n  train_file: train.jsonl\n")
    result = tuneloop("train", "c.yaml", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert expected in result.stderr and "data.skip_invalid" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_data_file_is_named_with_its_key(tmp_path):
    (tmp_path / "c.yaml").write_text("data:\n  train_file: nowhere.jsonl\n")
    result = tuneloop("run", "c.yaml", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "data.train_file: nowhere.jsonl: no such file" in result.stderr


def test_commands_on_a_directory_that_is_not_a_run_say_so(tmp_path):
    for command in (["evaluate", str(tmp_path)], ["chat", str(tmp_path), "--prompt", "hi"],
                    ["export", str(tmp_path), "--out", str(tmp_path / "x")]):
        result = tuneloop(*command)
        assert result.returncode == 1 and "not a tuneloop run directory" in result.stderr
        assert "Traceback" not in result.stderr


def test_models_list_names_the_three_defaults():
    result = tuneloop("models", "list", "--json")
    assert result.returncode == 0
    names = [row["name"] for row in json.loads(result.stdout)]
    assert names == ["smollm2-135m-instruct", "gemma3-270m", "minilm-l6"]


def test_unknown_model_pull_lists_the_defaults():
    result = tuneloop("models", "pull", "gpt-9")
    assert result.returncode == 1 and "smollm2-135m-instruct" in result.stderr
