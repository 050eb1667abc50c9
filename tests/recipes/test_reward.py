"""The reward-model recipe on the tiny random Llama: a standalone model/ with one output, the scorer, its evaluation."""

from __future__ import annotations

import json

import pytest

from tuneloop.errors import TuneloopError
from tuneloop.models.reward_scorer import load_reward_scorer
from tuneloop.workspace import read_json


def test_the_reward_run_saves_a_standalone_one_output_model_that_scores_in_batches(tiny_reward_run):
    model_dir = tiny_reward_run / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"] and len(config["id2label"]) == 1
    assert not (model_dir / "adapter_config.json").exists()  # the LoRA adapter is merged in
    saved = (model_dir / "tokenizer_config.json").read_text()
    assert "chat_template" in saved or (model_dir / "chat_template.jinja").is_file()

    scorer = load_reward_scorer(tiny_reward_run, batch_size=2)
    prompts = [[{"role": "user", "content": "How long is the warranty?"}]] * 3
    replies = ["The warranty lasts 7 years.", "Go away.", "Whatever."]
    batched = scorer.score(prompts, replies)
    one_by_one = [scorer.score(prompts[:1], [reply])[0] for reply in replies]
    assert batched == pytest.approx(one_by_one, abs=1e-4) and len(set(batched)) == 3
    assert load_reward_scorer(model_dir).score(prompts[:1], replies[:1]) == pytest.approx(batched[:1], abs=1e-4)


def test_the_reward_run_is_scored_on_held_out_pairs_against_the_constant_baseline(tiny_reward_run):
    metrics = read_json(tiny_reward_run / "metrics.json")
    assert metrics["baseline"] == {"pair_accuracy": 50.0}
    assert 0 <= metrics["tuned"]["pair_accuracy"] <= 100 and metrics["heldout"]["rows"] == 6
    low, high = metrics["intervals"]["tuned"]["pair_accuracy"]
    assert low <= metrics["tuned"]["pair_accuracy"] <= high
    assert read_json(tiny_reward_run / "train_summary.json")["recipe"] == "reward"


def test_a_directory_that_is_not_a_reward_run_is_a_clear_error(tmp_path, tiny_model_dir):
    with pytest.raises(TuneloopError, match="not a reward run"):
        load_reward_scorer(tiny_model_dir)  # a causal LM, not a one-output scorer
    with pytest.raises(TuneloopError, match="train.recipe: reward"):
        load_reward_scorer(tmp_path)
