"""Every train.method on the tiny Llama: trains two steps, saves, reloads as the evaluation does, changes the
model, and merges into plain weights where the method allows (the merged model computes the same logits)."""

from __future__ import annotations

import pytest
import torch
from conftest import FACTS, chat_row, write_config, write_jsonl
from typer.testing import CliRunner

from tuneloop.cli import app
from tuneloop.workspace import RunDir, read_json

METHODS = {
    "lora-rslora-gaussian": {"method": "lora", "lora": {"rank": 4, "alpha": 8, "use_rslora": True, "init": "gaussian"}},
    "lora-pissa": {"method": "lora", "lora": {"rank": 4, "alpha": 4, "init": "pissa"}},
    "dora": {"method": "dora", "lora": {"rank": 4, "alpha": 8}},
    "ia3": {"method": "ia3"},
    "prefix": {"method": "prefix", "lora": {"virtual_tokens": 4}},
    "prompt": {"method": "prompt", "lora": {"virtual_tokens": 4}},
    "full": {"method": "full"},
}


@pytest.fixture(scope="module")
def method_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("methods-data")
    return write_jsonl(root / "train.jsonl", [chat_row(q, a, k) for q, a, k in FACTS] * 2)


def _train(tmp_path, tiny_model_dir, data, train: dict):
    """`tuneloop train` for two steps."""
    config = write_config(tmp_path / "run.yaml", {
        "output_dir": str(tmp_path / "run"),
        "model": {"name": str(tiny_model_dir), "dtype": "fp32", "device": "cpu"},
        "data": {"train_file": str(data), "max_length": 64, "audit": {"enabled": False}},
        "train": {"preset": "none", "max_steps": 2, "batch_size": 4, "learning_rate": 5e-2, "eval_every": 2,
                  "save_every": 2} | train,
        "tracking": {"backend": "none"},
    })
    return CliRunner().invoke(app, ["train", str(config)]), RunDir(tmp_path / "run")


@pytest.mark.parametrize("name", list(METHODS))
def test_method_trains_saves_reloads_and_merges_where_it_can(name, tmp_path, tiny_model_dir, method_data):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneloop.errors import ModelError
    from tuneloop.models.load import load_tuned, merged_tuned_model
    from tuneloop.train.validation_loss import validation_loss

    method = METHODS[name]["method"]
    result, run = _train(tmp_path, tiny_model_dir, method_data, METHODS[name])
    assert result.exit_code == 0, result.output
    summary = read_json(run.root / "train_summary.json")
    assert summary["method"] == method and summary["steps"] == 2
    assert 0 < summary["trainable_parameters"] <= summary["total_parameters"] and summary["peak_memory_mb"] > 0
    if method in ("prefix", "prompt"):
        assert "switched off" in result.output and "train.packing" in result.output
    assert run.trained_weights() == (run.model if method == "full" else run.adapter)
    if name == "lora-pissa":
        # PiSSA moves the base's principal part into the adapter; the saved adapter is converted to a plain LoRA
        # (twice the rank) on the untouched base, which is what evaluation and export load it on.
        settings = read_json(run.adapter / "adapter_config.json")
        assert settings["r"] == 8 and settings["init_lora_weights"] is True

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    ids = tokenizer("Where is the head office? The head office is in", return_tensors="pt")["input_ids"]
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tuned, _ = load_tuned(run, str(tiny_model_dir), torch.float32, "cpu")
    with torch.inference_mode():
        base_logits, tuned_logits = base(ids).logits, tuned(input_ids=ids).logits
    assert tuned_logits.shape[-1] == base_logits.shape[-1]
    tail = tuned_logits[:, -ids.shape[1]:]  # prompt tuning returns logits for its virtual tokens too
    assert (tail - base_logits).abs().max() > 1e-4, "training did not change the model"
    # The evaluation's validation loss (prompt tuning's logits start with its virtual tokens, which it must skip).
    encoded = [{"input_ids": ids[0].tolist(), "labels": ids[0].tolist()}]
    loss = validation_loss(tuned, encoded, tokenizer.pad_token_id)["validation_loss"]
    assert 0 < loss < 20
    if method == "full":
        return
    if method in ("prefix", "prompt"):
        with pytest.raises(ModelError, match="virtual tokens"):
            merged_tuned_model(run, str(tiny_model_dir), method)
        return
    merged = merged_tuned_model(run, str(tiny_model_dir), method)
    assert not hasattr(merged, "peft_config")
    with torch.inference_mode():
        assert (merged(ids).logits - tuned_logits).abs().max() < 1e-4


def test_qlora_trains_with_bitsandbytes_or_says_how_to_get_it(tmp_path, tiny_model_dir, method_data):
    """bitsandbytes is an optional extra: without it, one error naming the install; with it, QLoRA trains
    (on a 64-wide Llama: bitsandbytes quantizes in blocks of 64 values)."""
    import importlib.util

    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tuneloop.errors import TuneloopError

    model_dir = tmp_path / "llama64"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.save_pretrained(model_dir)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                 num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
                                 max_position_embeddings=256, pad_token_id=tokenizer.pad_token_id,
                                 eos_token_id=tokenizer.eos_token_id, bos_token_id=None)).save_pretrained(model_dir)
    result, run = _train(tmp_path, model_dir, method_data, {"method": "qlora", "lora": {"rank": 4}})
    if importlib.util.find_spec("bitsandbytes") is None:
        assert isinstance(result.exception, TuneloopError)
        assert "pip install 'tuneloop[qlora]'" in str(result.exception) and "CUDA" in str(result.exception)
        return
    assert result.exit_code == 0, result.output
    assert read_json(run.root / "train_summary.json")["method"] == "qlora"
    assert (run.adapter / "adapter_config.json").is_file()
