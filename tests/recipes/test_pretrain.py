"""Continued pretraining on the tiny random Llama: packing, .txt input, domain vs general perplexity, report."""

from __future__ import annotations

import pytest
from conftest import FACTS, write_config
from transformers import AutoTokenizer
from typer.testing import CliRunner

from tuneloop.cli import app
from tuneloop.data.encode import IGNORE_INDEX
from tuneloop.data.text_blocks import BlockCollator, document_token_ids, first_tokens, pack_documents, pack_texts
from tuneloop.errors import TuneloopError
from tuneloop.workspace import RunDir, read_json

runner = CliRunner()
# A small, very repetitive "domain": the model can learn it in a few dozen steps.
PARTS = ("valve", "pump", "filter", "gauge")
COLOURS = ("red", "blue", "green")


def domain_documents(count: int) -> list[str]:
    return [
        f"The {PARTS[i % 4]} of line {i % 7} is {COLOURS[i % 3]}.\nCheck the {PARTS[i % 4]} every {i % 5 + 1} days."
        for i in range(count)
    ]


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    if isinstance(result.exception, TuneloopError):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_packing_fills_every_block_but_the_last_with_eos_between_documents(tokenizer):
    texts = domain_documents(9)
    documents = document_token_ids(tokenizer, texts)
    eos = tokenizer.eos_token_id
    assert all(ids[-1] == eos and eos not in ids[:-1] for ids in documents)
    assert [ids[:-1] for ids in documents] == [tokenizer(t)["input_ids"] for t in texts]

    blocks, stats = pack_documents(documents, 16)
    stream = [token for ids in documents for token in ids]
    assert [token for block in blocks for token in block] == stream  # nothing lost, nothing reordered
    assert stats.tokens == len(stream) == sum(len(block) for block in blocks)
    assert stats.documents == 9 and stats.blocks == len(blocks) == -(-len(stream) // 16)
    assert all(len(block) == 16 for block in blocks[:-1]) and 0 < len(blocks[-1]) <= 16
    assert stats.last_block_tokens == len(blocks[-1])
    assert sum(block.count(eos) for block in blocks) == 9  # one EOS per document, none added elsewhere
    assert "9 document(s)" in stats.describe()

    exact, exact_stats = pack_documents([[1, 2, eos], [3, eos]], 5)
    assert exact == [[1, 2, eos, 3, eos]] and exact_stats.last_block_tokens == 5


def test_the_collator_pads_only_the_short_block_and_masks_its_padding(tokenizer):
    blocks, _ = pack_texts(tokenizer, domain_documents(3), 8)
    batch = BlockCollator(tokenizer.pad_token_id)([{"input_ids": blocks[0]}, {"input_ids": [5, 6, 7]}])
    assert batch["input_ids"].tolist()[0] == blocks[0] and batch["labels"].tolist()[0] == blocks[0]
    assert batch["labels"].tolist()[1] == [5, 6, 7] + [IGNORE_INDEX] * 5
    assert batch["attention_mask"].tolist() == [[1] * 8, [1, 1, 1] + [0] * 5]
    assert first_tokens(blocks, 20) == blocks[:2] and first_tokens(blocks, 3) == blocks[:1]
    assert first_tokens(blocks, None) == blocks


def pretrain_config(tmp_path, tiny_config, **train) -> dict:
    domain = tmp_path / "notes.txt"
    domain.write_text("\n\n".join(domain_documents(60)) + "\n", encoding="utf-8")
    general = tmp_path / "general.txt"
    general.write_text("\n\n".join(f"{q} {a}" for q, a, _ in FACTS) + "\n", encoding="utf-8")
    tiny_config["data"] = {"train_file": str(domain), "test_size": 0.15, "max_length": 32}
    tiny_config["train"].update(method="full", learning_rate=3e-3, epochs=4, batch_size=8, eval_every=10,
                                save_every=10, early_stopping_patience=None, **train)
    tiny_config["evaluate"] = {"batch_size": 8, "general_text": [str(general)]}
    return tiny_config


@pytest.fixture()
def pretrained(tmp_path, tiny_config):
    raw = pretrain_config(tmp_path, tiny_config)
    result = invoke("run", str(write_config(tmp_path / "cpt.yaml", raw)))
    assert result.exit_code == 0, result.output
    return RunDir(tmp_path / "run"), result


def test_continued_pretraining_lowers_domain_perplexity_and_measures_general_text(pretrained):
    run, result = pretrained
    summary = read_json(run.root / "train_summary.json")
    assert summary["task"] == "continued pretraining" and (run.model / "config.json").is_file()
    packing = summary["packing"]["train"]
    counts = read_json(run.data / "data_report.json")["examples"]
    assert packing["block_size"] == 32 and packing["documents"] == counts["train"]
    assert sum(counts.values()) == 60
    assert summary["tokens_seen"] == packing["tokens"] * 4  # every token, every epoch, no padding

    metrics = read_json(run.metrics)
    assert metrics["task"] == "continued pretraining" and metrics["heldout"]["split"] == "test"
    for side in ("baseline", "tuned", "delta"):
        assert set(metrics[side]) == {"domain_perplexity", "domain_loss", "general_perplexity", "general_loss"}
    # A random model sits near the vocabulary size; four epochs of repetitive text must cut that hard.
    assert metrics["tuned"]["domain_perplexity"] < 0.5 * metrics["baseline"]["domain_perplexity"]
    assert metrics["comparison"]["domain_loss"]["significant"]
    assert metrics["tuned"]["general_perplexity"] > 0 and metrics["perplexity_sets"]["general"]["documents"] == 6
    sets = metrics["perplexity_sets"]
    assert sets["domain"]["documents"] == counts["test"] and sets["domain"]["scored_tokens"] == sets["domain"]["tokens"]
    low, high = metrics["intervals"]["tuned"]["domain_perplexity"]
    assert low <= metrics["tuned"]["domain_perplexity"] * 1.05 and high >= low

    report = (run.root / "report.html").read_text()
    assert "domain perplexity" in report and "general perplexity" in report and "Perplexity sets" in report
    assert "domain_perplexity" in result.output  # the CLI table


def test_general_text_is_capped_and_a_missing_file_stops_before_training(tmp_path, tiny_config):
    raw = pretrain_config(tmp_path, tiny_config, max_steps=1)
    raw["evaluate"]["max_perplexity_tokens"] = 40
    raw["train"]["method"] = "lora"
    result = invoke("run", str(write_config(tmp_path / "cpt.yaml", raw)))
    assert result.exit_code == 0, result.output
    metrics = read_json(RunDir(tmp_path / "run").metrics)
    assert metrics["perplexity_sets"]["general"]["scored_tokens"] <= 40 < metrics["perplexity_sets"]["general"][
        "tokens"]
    assert "evaluate.max_perplexity_tokens" in result.output

    raw["evaluate"]["general_text"] = [str(tmp_path / "nope.txt")]
    raw["output_dir"] = str(tmp_path / "other")
    with pytest.raises(TuneloopError, match=r"evaluate.general_text\[0\]: .*nope.txt: no such file"):
        invoke("run", str(write_config(tmp_path / "cpt.yaml", raw)))
    assert not RunDir(tmp_path / "other").checkpoints.exists()


def test_sft_runs_measure_general_perplexity_too(tmp_path, tiny_config):
    general = tmp_path / "general.txt"
    general.write_text("\n\n".join(domain_documents(5)), encoding="utf-8")
    tiny_config["train"]["max_steps"] = 2
    tiny_config["evaluate"].update(general_text=[str(general)], intervals=False)
    result = invoke("run", str(write_config(tmp_path / "sft.yaml", tiny_config)))
    assert result.exit_code == 0, result.output
    metrics = read_json(RunDir(tmp_path / "run").metrics)
    assert {"general_perplexity", "contains_answer"} <= set(metrics["tuned"]) and "general_loss" in metrics["delta"]
