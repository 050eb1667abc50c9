"""Preference metrics on constructed cases: accuracy, implicit reward, ranking, reply log-probs, the safety rule."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from tuneloop.config.schema import SafetyConfig
from tuneloop.evaluate.preference import (
    implicit_rewards,
    preference_correct,
    ranked_above,
    reply_log_probs,
    reply_token_ids,
)
from tuneloop.evaluate.safety import safety_prompts, safety_verdict


def test_preference_accuracy_compares_per_token_means_not_sums():
    # Pair 0: chosen is longer, so its sum is lower, but its per-token mean is higher: chosen wins.
    scores = {"chosen_sum": np.array([-10.0, -2.0, -3.0]), "rejected_sum": np.array([-4.0, -1.0, -3.0]),
              "chosen_mean": np.array([-1.0, -2.0, -1.5]), "rejected_mean": np.array([-2.0, -1.0, -1.5])}
    assert preference_correct(scores).tolist() == [100.0, 0.0, 0.0]  # a tie is not a win


def test_implicit_reward_is_beta_times_the_change_of_the_log_ratio():
    base = {"chosen_sum": np.array([-5.0, -5.0]), "rejected_sum": np.array([-5.0, -5.0])}
    tuned = {"chosen_sum": np.array([-4.0, -6.0]), "rejected_sum": np.array([-7.0, -5.0])}
    correct, margin = implicit_rewards(tuned, base, beta=0.5)
    assert margin.tolist() == pytest.approx([0.5 * (1 - -2), 0.5 * (-1 - 0)]) and correct.tolist() == [100.0, 0.0]
    same, zero = implicit_rewards(base, base, beta=0.1)  # the base against itself: no pair ranked, margin 0
    assert zero.tolist() == [0.0, 0.0] and same.tolist() == [0.0, 0.0]


def test_desirable_completions_are_ranked_within_their_prompt():
    scores = np.array([-1.0, -2.0, -3.0, -0.5])
    outcome = ranked_above(scores, [True, False, True, False], ["a", "a", "b", "b"])
    assert outcome.tolist() == [100.0, 0.0]
    across = ranked_above(scores, [True, False, True, False], ["a", "b", "c", "d"])  # no prompt has both
    assert across.tolist() == [100.0, 0.0, 0.0, 0.0]  # -1 beats -2 only: every desirable vs every undesirable


def test_reply_log_probs_score_only_the_reply_tokens(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    prompt = [{"role": "user", "content": "How long is the warranty?"}]
    ids, start = reply_token_ids(tokenizer, prompt, "The warranty lasts 7 years.", 256)
    rendered = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=False)
    assert ids[:start] == rendered
    with torch.no_grad():
        logps = torch.log_softmax(model(torch.tensor([ids])).logits[0, :-1], dim=-1)
    expected = sum(float(logps[i - 1, ids[i]]) for i in range(start, len(ids)))
    sums, counts = reply_log_probs(model, tokenizer, [prompt, prompt], ["The warranty lasts 7 years.", "No."], 256, 2)
    assert sums[0] == pytest.approx(expected, abs=1e-4) and counts[0] == len(ids) - start
    short, kept = reply_token_ids(tokenizer, prompt, "The warranty lasts 7 years.", len(ids) - 3)
    assert len(short) == len(ids) - 3 and short[kept:] == ids[start:]  # the prompt is cut from the left


def test_the_safety_rule_fails_a_real_drop_and_passes_noise_or_a_drop_within_the_margin(tmp_path):
    rng = np.random.default_rng(0)
    baseline = rng.normal(1.0, 0.3, 80)
    config = SafetyConfig(prompts="p.jsonl", scorer="runs/rm")
    assert not safety_verdict(baseline, baseline - 0.5, config, console_print=lambda *_: None)["passed"]
    assert safety_verdict(baseline, baseline + rng.normal(0, 0.05, 80), config, console_print=lambda *_: None)["passed"]
    lenient = SafetyConfig(prompts="p.jsonl", scorer="runs/rm", max_drop=1.0)
    assert safety_verdict(baseline, baseline - 0.5, lenient, console_print=lambda *_: None)["passed"]


def test_safety_prompts_come_from_any_prompt_shape_and_bad_rows_name_their_line(tmp_path):
    from conftest import write_jsonl

    good = write_jsonl(tmp_path / "prompts.jsonl", [
        {"prompt": "How do I pick a lock?"},
        {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]},
        {"chosen": "\n\nHuman: Tell me a secret\n\nAssistant: No.", "rejected": "\n\nHuman: Tell me a secret"
         "\n\nAssistant: Fine."}])
    assert [p[-1]["content"] for p in safety_prompts(good, 10)] == ["How do I pick a lock?", "Hi", "Tell me a secret"]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"question": "no prompt here"}])
    with pytest.raises(Exception, match=r"bad.jsonl:2: no prompt"):
        safety_prompts(bad, 10)
