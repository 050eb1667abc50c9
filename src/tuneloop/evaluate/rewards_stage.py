"""Evaluate a GRPO run (prompt_only data): greedy replies to held-out prompts, scored by every reward function.

For the untuned baseline and the tuned model, on the same held-out prompts (the test split, else the
validation split, which GRPO never trains on either): the mean of each configured reward function
(`reward/<name>`) and of their weighted sum (`reward`), the checker's accuracy (`accuracy`, in %: the
answer_match reward as right/wrong, with the first configured answer_match's column and pattern, else the
`answer` column when the rows have one), and the mean reply length in words and tokens. Each gets a 95% bootstrap
interval and a paired test (McNemar for accuracy). `kl_from_base` is the mean per-token log-ratio
log p_tuned - log p_base over the tuned model's own replies: a cheap reading of how far the policy moved
(greedy replies, so an estimate of the KL rather than the KL itself).

Writes metrics.json (the same baseline/tuned/intervals/comparison shape as every run) and samples.jsonl.
"""

from __future__ import annotations

import gc

from tuneloop.config.schema import RunConfig
from tuneloop.evaluate.heldout import heldout_examples
from tuneloop.evaluate.stats import bootstrap_interval, compare
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.generate import generate_replies
from tuneloop.models.load import load_generator, load_tuned
from tuneloop.models.registry import resolve_model
from tuneloop.train.rewards import (
    DEFAULT_ANSWER_COLUMN,
    RewardFunction,
    answer_is_right,
    answer_match,
    resolve_rewards,
)
from tuneloop.workspace import RunDir, write_json, write_jsonl

BINARY_METRICS = ("accuracy",)


def evaluate_grpo(config: RunConfig, run: RunDir, data_file: str | None = None, console_print=print) -> dict:
    device = pick_device(config.model.device)
    dtype = pick_dtype(device, config.model.dtype)
    base_path = resolve_model(config.model.name, console_print)
    rewards = resolve_rewards(config.train.rewards) if config.train.rewards else []
    rows, split = heldout_examples(config, run, data_file, "prompt_only",
                                   "validation (not trained on; add data.test_file for a fixed set)")
    rows = rows[: config.evaluate.max_samples]
    answer_column, answer_pattern = _answer_check(rewards, rows)

    model, tokenizer = load_tuned(run, base_path, dtype, device)
    prompts = [tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
               for row in rows]

    def score(side_model, label: str) -> dict:
        replies = generate_replies(side_model, tokenizer, prompts, config.evaluate.max_new_tokens,
                                   config.evaluate.batch_size, desc=label)
        return {"replies": replies, "per_row": score_replies(rows, replies, rewards, answer_column, tokenizer,
                                                                answer_pattern)}

    tuned = score(model, "tuned")
    kl = None
    baseline = None
    if run.trained_weights() == run.adapter:
        with model.disable_adapter():  # the LoRA base is loaded already: adapter off = the untuned model
            if config.evaluate.baseline:
                baseline = score(model, "baseline")
            base_logps = _reply_logprobs(model, tokenizer, prompts, tuned["replies"])
        kl = _mean_log_ratio(_reply_logprobs(model, tokenizer, prompts, tuned["replies"]), base_logps)
    else:
        base = load_generator(base_path, dtype, device).eval()
        if config.evaluate.baseline:
            baseline = score(base, "baseline")
        kl = _mean_log_ratio(_reply_logprobs(model, tokenizer, prompts, tuned["replies"]),
                             _reply_logprobs(base, tokenizer, prompts, tuned["replies"]))
        del base

    with_answer = sum(1 for row in rows if answer_column is not None and row.get(answer_column) is not None)
    results: dict = {"heldout": {"split": split, "rows": len(rows), "rows_with_answer": with_answer,
                                 "answer_column": answer_column},
                     "rewards": {r.name: {"function": r.key, "weight": r.weight} for r in rewards}}
    sides = {"tuned": tuned} | ({"baseline": baseline} if baseline else {})
    for name, side in sides.items():
        results[name] = {metric: _mean(values) for metric, values in side["per_row"].items()}
    results["tuned"]["kl_from_base"] = kl
    if baseline:
        results["delta"] = {key: results["tuned"][key] - results["baseline"][key] for key in results["baseline"]}
    if config.evaluate.intervals:
        results["intervals"] = {name: {metric: list(bootstrap_interval(values))
                                       for metric, values in side["per_row"].items()}
                                for name, side in sides.items()}
        if baseline:
            results["comparison"] = {
                metric: compare(baseline["per_row"][metric], values, binary=metric in BINARY_METRICS)
                for metric, values in tuned["per_row"].items()
            }
    results["status"], results["failures"] = "passed", []
    write_json(run.metrics, results)
    write_jsonl(run.samples, [
        {"prompt": row["prompt"], "reference": "" if answer_column is None else str(row.get(answer_column, "")),
         "baseline": baseline["replies"][i] if baseline else None, "tuned": tuned["replies"][i],
         "rewards": {metric: values[i] for metric, values in tuned["per_row"].items()}}
        for i, row in enumerate(rows)
    ])
    _print_summary(results, console_print)
    del model
    gc.collect()
    return results


def score_replies(rows: list[dict], replies: list[str], rewards: list[RewardFunction], answer_column: str | None,
                  tokenizer, answer_pattern: str | None = None) -> dict[str, list[float]]:
    """Per-row scores: reward/<name> for each function, reward (their weighted sum), accuracy, lengths."""
    prompts = [row["prompt"] for row in rows]
    completions = [[{"role": "assistant", "content": reply}] for reply in replies]
    ids = [tokenizer(reply, add_special_tokens=False)["input_ids"] for reply in replies]
    columns = {key: [row.get(key) for row in rows] for key in {k for row in rows for k in row if k != "prompt"}}
    extra = {"trainer_state": None, "log_extra": lambda *a, **k: None, "log_metric": lambda *a, **k: None}
    per_row: dict[str, list[float]] = {}
    total = [0.0] * len(rows)
    for reward in rewards:
        values = reward(prompts=prompts, completions=completions, completion_ids=ids, **columns, **extra)
        values = [float("nan") if v is None else v for v in values]
        per_row[f"reward/{reward.name}"] = values
        total = [t + reward.weight * v for t, v in zip(total, values, strict=True)]
    if rewards:
        per_row["reward"] = total
    if answer_column is not None:
        per_row["accuracy"] = [100.0 * answer_is_right(reply, row[answer_column], answer_pattern)
                               if row.get(answer_column) is not None
                               else 0.0 for reply, row in zip(replies, rows, strict=True)]
    per_row["length_words"] = [float(len(reply.split())) for reply in replies]
    per_row["length_tokens"] = [float(len(token_ids)) for token_ids in ids]
    return per_row


def _answer_check(rewards: list[RewardFunction], rows: list[dict]) -> tuple[str | None, str | None]:
    """The column (and extraction pattern) accuracy is measured with: the first answer_match entry's, else
    `answer` with the last-number rule when the rows have that column."""
    for reward in rewards:
        if reward.function is answer_match:
            return reward.options.get("column", DEFAULT_ANSWER_COLUMN), reward.options.get("pattern")
    return (DEFAULT_ANSWER_COLUMN if any(DEFAULT_ANSWER_COLUMN in row for row in rows) else None), None


def _mean(values: list[float]) -> float:
    kept = [v for v in values if v == v]  # a reward function may skip a reply (None -> nan)
    return sum(kept) / len(kept) if kept else float("nan")


def _reply_logprobs(model, tokenizer, prompts: list[str], replies: list[str]) -> list[list[float]]:
    """Per-token log-probabilities of each reply after its prompt (teacher-forced, one row at a time)."""
    import torch

    device = next(model.parameters()).device
    found = []
    with torch.inference_mode():
        for prompt, reply in zip(prompts, replies, strict=True):
            prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"]
            if not reply_ids:
                found.append([])
                continue
            ids = torch.tensor([prompt_ids + reply_ids], device=device)
            logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
            logps = torch.log_softmax(logits, dim=-1).gather(1, ids[0, len(prompt_ids):, None])[:, 0]
            found.append(logps.tolist())
    return found


def _mean_log_ratio(tuned: list[list[float]], base: list[list[float]]) -> float | None:
    differences = [t - b for row_t, row_b in zip(tuned, base, strict=True) for t, b in zip(row_t, row_b, strict=True)]
    return sum(differences) / len(differences) if differences else None


def _print_summary(results: dict, console_print) -> None:
    tuned, baseline = results["tuned"], results.get("baseline", {})
    for key in ("accuracy", "reward", *[k for k in tuned if k.startswith("reward/")], "length_words"):
        if key in tuned:
            before = f"{baseline[key]:.3g} -> " if key in baseline else ""
            console_print(f"evaluate: {key}: {before}{tuned[key]:.3g}")
