"""Summarization data through the SFT recipe on a tiny random Llama: detected, trained, scored (ROUGE, lengths)."""

from __future__ import annotations

from conftest import write_jsonl

from tuneloop.config.load import validate_config
from tuneloop.stages import run_all
from tuneloop.workspace import read_json, read_jsonl

ROWS = [
    {"article": f"The warranty of model {n} lasts {n} years. Shops are closed on Wednesday.",
     "highlights": f"Model {n}: {n}-year warranty."}
    for n in range(1, 13)
]


def test_summaries_train_through_sft_and_report_rouge_and_lengths(tmp_path, tiny_config):
    tiny_config["data"] = {"train_file": str(write_jsonl(tmp_path / "train.jsonl", ROWS[:9])),
                           "test_file": str(write_jsonl(tmp_path / "test.jsonl", ROWS[9:])), "max_length": 96,
                           "summary_instruction": "TL;DR:"}
    tiny_config["train"].update(epochs=2, eval_every=2, save_every=2)
    printed: list[str] = []
    run, _ = run_all(validate_config(tiny_config), console_print=printed.append)

    assert any(line.startswith("data: summarization format") for line in printed)
    assert any(line.startswith("train: lora on") for line in printed)  # the SFT recipe, not seq2seq
    first = read_jsonl(run.split("test"))[0]["messages"]
    assert first[0]["content"].startswith("TL;DR:\n\nThe warranty of model 10")
    assert first[1]["content"] == "Model 10: 10-year warranty."

    metrics = read_json(run.metrics)
    for side in ("baseline", "tuned"):
        assert {"rouge_1", "rouge_2", "rouge_l"} <= set(metrics[side])
        assert "exact_match" not in metrics[side]
    lengths = metrics["lengths"]
    assert lengths["reference"] == {"mean_words": 4.0, "median_words": 4.0}
    samples = read_jsonl(run.samples)
    baseline_words = [len(sample["baseline"].split()) for sample in samples]
    assert lengths["baseline"]["mean_words"] == sum(baseline_words) / len(baseline_words)
    assert "Summary lengths" in (run.root / "report.html").read_text()
