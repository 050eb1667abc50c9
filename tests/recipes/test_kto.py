"""KTO on the tiny random Llama: unpaired thumbs-up/down rows, scored on held-out pairs."""

from __future__ import annotations

from conftest import preference_pairs, preference_run_config, write_jsonl

from tuneloop.config.load import validate_config
from tuneloop.stages import run_all
from tuneloop.workspace import read_json, read_jsonl


def test_kto_trains_on_unpaired_rows_and_is_scored_on_held_out_pairs(tmp_path, tiny_model_dir, pair_files):
    rows = [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
            for p in preference_pairs() for side in ("chosen", "rejected")]
    files = {"train": write_jsonl(tmp_path / "feedback.jsonl", rows), "test": pair_files["test"]}
    raw = preference_run_config(tmp_path / "run", tiny_model_dir, files, "auto", max_steps=6)
    run, results = run_all(validate_config(raw), console_print=lambda *_: None)

    assert read_json(run.data / "data_report.json")["format"] == "unpaired"
    summary = read_json(run.root / "train_summary.json")
    assert summary["recipe"] == "kto" and summary["desirable_rows"] + summary["undesirable_rows"] == len(
        read_jsonl(run.split("train")))
    assert (run.adapter / "adapter_config.json").is_file()
    assert results["heldout"]["pairs"] == 6 and "preference_accuracy" in results["tuned"]
    losses = [r["loss"] for r in read_jsonl(run.train_log) if "loss" in r and "eval_loss" not in r]
    assert losses[-1] < losses[0]
