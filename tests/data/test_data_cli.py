"""`tuneloop data ...` as a user runs it, bad input included, and the audit gate of `tuneloop run`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import FACTS, chat_row, write_config, write_jsonl
from typer.testing import CliRunner

from tuneloop.cli import app
from tuneloop.errors import DataError

runner = CliRunner()


def tuneloop(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tuneloop.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def test_audit_writes_json_and_html(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [chat_row(q, a) for q, a, _ in FACTS] * 2)
    outputs = ["--json", str(tmp_path / "a.json"), "--html", str(tmp_path / "a.html")]
    result = tuneloop("data", "audit", str(train), *outputs)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["duplicates"]["exact"]["duplicate_rows"] == len(FACTS)
    assert "repeat an earlier row" in result.stderr
    assert (tmp_path / "a.html").read_text().startswith("<!doctype html>")


@pytest.mark.parametrize(
    ("name", "content", "expected"),
    [
        ("bin.jsonl", b"\x00\x01\x02binary", "looks like a binary file"),
        ("latin.csv", "text,label\nok,1\ncaf\xe9,2\n".encode("latin-1"), "latin.csv:3: not valid UTF-8"),
        ("data.xlsx", b"PK\x03\x04", "unknown file type '.xlsx'"),
    ],
)
def test_unreadable_files_get_one_clear_message(tmp_path, name, content, expected):
    (tmp_path / name).write_bytes(content)
    result = tuneloop("data", "audit", str(tmp_path / name))
    assert result.returncode == 2 and expected in result.stderr
    assert "Traceback" not in result.stderr


def test_ragged_csv_rows_are_reported_not_fatal(tmp_path):
    (tmp_path / "r.csv").write_text("text,label\nfine,1\ntoo,many,fields\nalso fine,0\n")
    result = tuneloop("data", "audit", str(tmp_path / "r.csv"), "--json", str(tmp_path / "r.json"))
    assert result.returncode == 0
    files = json.loads((tmp_path / "r.json").read_text())["files"][0]
    assert files["invalid_rows"] == 1 and "r.csv:3: has 3 fields, the header has 2" in files["invalid_examples"][0]


def test_split_and_clean_commands(tmp_path):
    rows = [{"text": f"sentence number {i} with some words", "label": str(i % 2)} for i in range(40)]
    source = write_jsonl(tmp_path / "all.jsonl", rows)
    assert tuneloop("data", "split", str(source), "--out", str(tmp_path / "s"), "--test-size", "0.25",
                    "--stratify", "label").returncode == 0
    assert len((tmp_path / "s" / "test.jsonl").read_text().splitlines()) == 10
    result = tuneloop("data", "clean", str(source), "--out", str(tmp_path / "c.jsonl"), "--dedup", "sideways")
    assert result.returncode == 2 and "--dedup must be 'exact' or 'near'" in result.stderr


def test_estimate_measures_a_few_steps_on_the_tiny_model(tmp_path, tiny_config):
    from tuneloop.config.load import validate_config
    from tuneloop.train.estimate import estimate_run

    report = estimate_run(validate_config(tiny_config), console_print=lambda *_: None)
    assert report["examples"] > 0 and report["tokens_per_epoch"] > report["target_tokens_per_epoch"] > 0
    assert report["seconds_per_micro_batch"] > 0 and report["estimated_training_seconds"] >= 0
    assert report["peak_rss_gb"] > 0
    memory = report["gpu_memory_gb"]
    assert memory["trainable_parameters"] < memory["parameters"]  # LoRA trains a small share


def test_run_opens_with_the_audit_and_stops_on_a_leak_limit(tmp_path, tiny_config, tiny_data):
    leaky_test = write_jsonl(tmp_path / "leaky.jsonl", [chat_row(q, a, k) for q, a, k in FACTS[:2]])
    tiny_config["data"].update(test_file=str(leaky_test), audit={"max_leaked_rows": 0})
    result = runner.invoke(app, ["train", str(write_config(tmp_path / "c.yaml", tiny_config))])
    assert isinstance(result.exception, DataError)
    assert "data.audit.max_leaked_rows=0: the data has 2" in str(result.exception)
    assert (tmp_path / "run" / "audit" / "audit.html").is_file()


def test_augment_command_tags_copies_and_the_split_keeps_them_in_train(tmp_path):
    import random

    rng = random.Random(0)
    vocabulary = "river stone garden window letter market winter silver bridge candle forest engine".split()
    rows = [{"text": " ".join(rng.choices(vocabulary, k=9)), "label": str(i % 2)} for i in range(20)]
    source = write_jsonl(tmp_path / "train.jsonl", rows)
    result = tuneloop("data", "augment", str(source), "--out", str(tmp_path / "aug.jsonl"), "--method", "eda")
    assert result.returncode == 0, result.stderr
    augmented = [json.loads(line) for line in (tmp_path / "aug.jsonl").read_text().splitlines()]
    tagged = [row for row in augmented if "augmented" in row]
    assert len(augmented) > len(rows) and tagged and all(row["augmented"]["method"] == "eda" for row in tagged)
    assert tuneloop("data", "split", str(tmp_path / "aug.jsonl"), "--out", str(tmp_path / "s"),
                    "--test-size", "0.3").returncode == 0
    test_rows = [json.loads(line) for line in (tmp_path / "s" / "test.jsonl").read_text().splitlines()]
    assert test_rows and not any("augmented" in row for row in test_rows)
