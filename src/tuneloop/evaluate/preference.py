"""Evaluation of preference runs (dpo, cpo, simpo, orpo, kto): base and tuned model on the same held-out pairs.

On the first evaluate.max_pairs (default: max_samples) held-out pairs (metrics.json "baseline"/"tuned", percentages):
    preference_accuracy       share of pairs where the model gives the chosen reply a higher per-token mean
                              log-likelihood than the rejected one (length-normalized, so a short reply
                              does not win by being short); McNemar's test base vs tuned
    implicit_reward_accuracy  DPO's implicit reward r = beta * (log p_tuned - log p_base) summed over the
                              reply: the share of pairs with r(chosen) > r(rejected); 50 for the base by definition
    implicit_reward_margin    mean r(chosen) - r(rejected); 0 for the base by definition
With unpaired held-out rows (KTO data) instead: desirable_ranked_above, the share of (desirable,
undesirable) completion pairs of one prompt (of any prompts when none share one) where the desirable
one has the higher per-token log-likelihood.
On generations for the first evaluate.max_samples held-out prompts (greedy, evaluate.max_new_tokens):
reply_words (length exploitation is the classic failure of preference tuning), reward_score (when
evaluate.reward_model names a reward run), and kl_from_base: the mean over tuned replies of
log p_tuned - log p_base summed over the reply's tokens, a Monte Carlo estimate of KL(tuned || base)
per reply in nats (0 for the base).
evaluate.forgetting (multiple-choice files, base vs tuned) and the safety gate (evaluate.safety,
tuneloop.evaluate.safety) can each fail the run.
"""

from __future__ import annotations

import gc
from contextlib import contextmanager

import numpy as np

from tuneloop.config.schema import RunConfig
from tuneloop.evaluate.forgetting import forgetting_failures, forgetting_report
from tuneloop.evaluate.heldout import heldout_examples
from tuneloop.evaluate.stats import bootstrap_interval, compare
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.generate import generate_replies
from tuneloop.models.load import load_causal_lm, load_tuned
from tuneloop.models.multiple_choice import load_questions, score_multiple_choice
from tuneloop.models.registry import resolve_model
from tuneloop.workspace import RunDir, read_jsonl, write_json, write_jsonl

# Metrics that are not on a 0-100 scale (kept out of the report's percentage chart).
UNSCALED_METRICS = ("implicit_reward_margin", "reply_words", "reward_score", "kl_from_base")


def reply_token_ids(tokenizer, prompt: list[dict], reply: str, max_length: int) -> tuple[list[int], int]:
    """The chat-templated prompt + reply as token ids, and where the reply starts; the prompt is cut from the
    left when the whole is longer than max_length (the reply is what is scored)."""
    prompt_ids = tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=False)
    full = tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": reply}], tokenize=True,
                                         return_dict=False)
    start = 0
    while start < min(len(prompt_ids), len(full)) and prompt_ids[start] == full[start]:
        start += 1
    start = max(1, start)  # the first token has no prediction
    if len(full) > max_length:
        cut = min(len(full) - max_length, start - 1)
        full, start = full[cut:][:max_length], start - cut
    return full, start


def reply_log_probs(model, tokenizer, prompts: list[list[dict]], replies: list[str], max_length: int,
                    batch_size: int, desc: str = "score") -> tuple[np.ndarray, np.ndarray]:
    """Sum of the reply tokens' log-probabilities under the model, and the number of reply tokens, per row."""
    import torch
    from tqdm.auto import tqdm

    from tuneloop.data.batching import padded_batch

    encoded = [reply_token_ids(tokenizer, p, r, max_length) for p, r in zip(prompts, replies, strict=True)]
    sums, counts = np.zeros(len(encoded)), np.zeros(len(encoded), dtype=int)
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i][0]))
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    model.eval()
    with torch.no_grad(), tqdm(total=len(order), desc=desc, unit="row", leave=False) as bar:
        for begin in range(0, len(order), batch_size):
            batch = order[begin:begin + batch_size]
            padded = padded_batch([encoded[i][0] for i in batch], pad)
            ids, mask = padded["input_ids"], padded["attention_mask"]
            scored = torch.zeros(ids.shape, dtype=torch.bool)
            for row, index in enumerate(batch):
                tokens, start = encoded[index]
                scored[row, start:len(tokens)] = True
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1].float()
            targets = ids[:, 1:].to(device)
            token_logps = torch.log_softmax(logits, dim=-1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)
            keep = scored[:, 1:].to(device)
            row_sums = (token_logps * keep).sum(dim=1).cpu().numpy()
            row_counts = keep.sum(dim=1).cpu().numpy()
            for row, index in enumerate(batch):
                sums[index], counts[index] = row_sums[row], row_counts[row]
            bar.update(len(batch))
    return sums, counts


def pair_log_probs(model, tokenizer, pairs: list[dict], max_length: int, batch_size: int, desc: str) -> dict:
    """Summed and per-token mean log-likelihoods of the chosen and rejected replies of each pair."""
    prompts = [p["prompt"] for p in pairs]
    chosen_sum, chosen_n = reply_log_probs(model, tokenizer, prompts, [p["chosen"] for p in pairs], max_length,
                                           batch_size, f"{desc} chosen")
    rejected_sum, rejected_n = reply_log_probs(model, tokenizer, prompts, [p["rejected"] for p in pairs], max_length,
                                               batch_size, f"{desc} rejected")
    return {"chosen_sum": chosen_sum, "rejected_sum": rejected_sum,
            "chosen_mean": chosen_sum / np.maximum(chosen_n, 1),
            "rejected_mean": rejected_sum / np.maximum(rejected_n, 1)}


def preference_correct(scores: dict) -> np.ndarray:
    """Per pair: 100 when the chosen reply's per-token mean log-likelihood is higher, else 0 (ties: 0)."""
    return np.where(scores["chosen_mean"] > scores["rejected_mean"], 100.0, 0.0)


def implicit_rewards(tuned: dict, base: dict, beta: float) -> tuple[np.ndarray, np.ndarray]:
    """Per pair: 100/0 for r(chosen) > r(rejected), and the margin r(chosen) - r(rejected), r = beta * log ratio."""
    margin = beta * ((tuned["chosen_sum"] - base["chosen_sum"]) - (tuned["rejected_sum"] - base["rejected_sum"]))
    return np.where(margin > 0, 100.0, 0.0), margin


def ranked_above(scores: np.ndarray, desirable: list[bool], prompts: list[str]) -> np.ndarray:
    """100/0 per (desirable, undesirable) completion pair: within each prompt when some prompt has both kinds,
    else every desirable completion against every undesirable one."""
    by_prompt: dict[str, tuple[list[int], list[int]]] = {}
    for index, (good, prompt) in enumerate(zip(desirable, prompts, strict=True)):
        by_prompt.setdefault(prompt, ([], []))[0 if good else 1].append(index)
    groups = [g for g in by_prompt.values() if g[0] and g[1]]
    if not groups:
        groups = [([i for i, g in enumerate(desirable) if g], [i for i, g in enumerate(desirable) if not g])]
    outcomes = [100.0 if scores[a] > scores[b] else 0.0 for good, bad in groups for a in good for b in bad]
    return np.asarray(outcomes)


def evaluate_preference_run(config: RunConfig, run: RunDir, data_file: str | None = None, console_print=print) -> dict:
    """Score base and tuned model on the held-out pairs and generations; write metrics.json and samples.jsonl."""
    device = pick_device(config.model.device)
    dtype = pick_dtype(device, config.model.dtype)
    base_path = resolve_model(config.model.name, console_print)
    heldout, heldout_name = heldout_examples(config, run, data_file, preference_file_format(config))
    evaluate = config.evaluate
    beta = config.train.preference.beta
    scored_pairs = evaluate.max_pairs or evaluate.max_samples
    pairs = [ex for ex in heldout if "chosen" in ex][:scored_pairs]
    unpaired = [ex for ex in heldout if "desirable" in ex][: 2 * scored_pairs]
    prompts = _unique_prompts(pairs or unpaired)[: evaluate.max_samples]
    max_length = config.data.max_length

    tuned_model, tokenizer = load_tuned(run, base_path, dtype, device)
    rendered = [tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in prompts]
    questions = {path: load_questions(path, evaluate.forgetting_format, evaluate.forgetting_limit)
                 for path in evaluate.forgetting}
    gate = None
    if evaluate.safety is not None:
        from tuneloop.evaluate.safety import SafetyGate

        gate = SafetyGate(evaluate.safety, tokenizer, evaluate)

    def side(model, label: str, replies_to_score: list[str] | None = None) -> dict:
        found: dict = {}
        if pairs:
            found["pairs"] = pair_log_probs(model, tokenizer, pairs, max_length, evaluate.batch_size, label)
        if unpaired:
            found["unpaired"] = reply_log_probs(model, tokenizer, [ex["prompt"] for ex in unpaired],
                                                [ex["completion"] for ex in unpaired], max_length,
                                                evaluate.batch_size, f"{label} completions")
        found["replies"] = generate_replies(model, tokenizer, rendered, evaluate.max_new_tokens, evaluate.batch_size,
                                            desc=f"{label} replies") if rendered else []
        # The KL on the tuned model's replies: scored by the tuned model here, by the base model below.
        scored_replies = found["replies"] if replies_to_score is None else replies_to_score
        found["tuned_reply_logp"] = reply_log_probs(model, tokenizer, prompts, scored_replies, max_length,
                                                    evaluate.batch_size, f"{label}: tuned replies")[0]
        found["forgetting"] = {path: score_multiple_choice(model, tokenizer, items, evaluate.batch_size)
                               for path, items in questions.items()}
        if gate is not None:
            gate.generate(model, label)
        return found

    tuned = side(tuned_model, "tuned")
    with base_model(run, tuned_model, base_path, dtype, device) as base_lm:
        baseline = side(base_lm, "baseline", tuned["replies"])
    safety = gate.verdict(device, console_print) if gate is not None else None

    per_row: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # metric -> (baseline values, tuned values)
    if pairs:
        per_row["preference_accuracy"] = (preference_correct(baseline["pairs"]), preference_correct(tuned["pairs"]))
        accuracy, margin = implicit_rewards(tuned["pairs"], baseline["pairs"], beta)
        per_row["implicit_reward_accuracy"] = (np.full(len(pairs), 50.0), accuracy)
        per_row["implicit_reward_margin"] = (np.zeros(len(pairs)), margin)
    if unpaired:
        means = {name: found["unpaired"][0] / np.maximum(found["unpaired"][1], 1)
                 for name, found in (("baseline", baseline), ("tuned", tuned))}
        keys = [repr(ex["prompt"]) for ex in unpaired]
        desirable = [bool(ex["desirable"]) for ex in unpaired]
        per_row["desirable_ranked_above"] = (ranked_above(means["baseline"], desirable, keys),
                                             ranked_above(means["tuned"], desirable, keys))
    if prompts:
        per_row["reply_words"] = (np.array([len(r.split()) for r in baseline["replies"]], dtype=float),
                                  np.array([len(r.split()) for r in tuned["replies"]], dtype=float))
        per_row["kl_from_base"] = (np.zeros(len(prompts)), tuned["tuned_reply_logp"] - baseline["tuned_reply_logp"])
        if evaluate.reward_model:
            from tuneloop.models.reward_scorer import load_reward_scorer

            scorer = load_reward_scorer(evaluate.reward_model, device=device, max_length=max_length)
            per_row["reward_score"] = (np.asarray(scorer.score(prompts, baseline["replies"])),
                                       np.asarray(scorer.score(prompts, tuned["replies"])))
            del scorer

    results: dict = {
        "heldout": {"split": heldout_name, "rows": len(pairs) or len(unpaired), "pairs": len(pairs),
                    "unpaired_rows": len(unpaired), "generation_prompts": len(prompts)},
        "validation": {"rows": len(read_jsonl(run.split("validation")))},
        "preference": {"beta": beta, "recipe": config.train.recipe,
                       "definitions": "preference_accuracy: chosen has the higher per-token mean log-likelihood; "
                       "implicit reward: beta * (log p_tuned - log p_base) over the reply (base: 50% and 0 by "
                       "definition); kl_from_base: mean over tuned replies of log p_tuned - log p_base (nats)"},
        "baseline": {name: float(np.mean(values[0])) for name, values in per_row.items()},
        "tuned": {name: float(np.mean(values[1])) for name, values in per_row.items()},
    }
    results["delta"] = {name: results["tuned"][name] - results["baseline"][name] for name in per_row}
    if evaluate.intervals:
        results["intervals"] = {
            "baseline": {name: list(bootstrap_interval(values[0])) for name, values in per_row.items()
                         if name in ("preference_accuracy", "desirable_ranked_above", "reply_words", "reward_score")},
            "tuned": {name: list(bootstrap_interval(values[1])) for name, values in per_row.items()},
        }
        # Right/wrong per pair: McNemar; fixed baselines (50%, 0) and graded scores: the paired bootstrap.
        results["comparison"] = {name: compare(values[0], values[1], binary=name == "preference_accuracy")
                                 for name, values in per_row.items() if name != "desirable_ranked_above"}
        if "desirable_ranked_above" in per_row:
            results["comparison"]["desirable_ranked_above"] = compare(*per_row["desirable_ranked_above"], binary=True)
    failures = []
    if questions:
        results["forgetting"] = forgetting_report(tuned, baseline, evaluate.max_forgetting)
        failures += forgetting_failures(results, evaluate.max_forgetting)
    if safety is not None:
        results["safety"] = safety
        failures += safety["failures"]
    results["status"] = "failed" if failures else "passed"
    results["failures"] = failures
    write_json(run.metrics, results)
    write_jsonl(run.samples, [
        {"prompt": prompt, "reference": ex.get("chosen") or ex.get("completion", ""),
         "rejected": ex.get("rejected"), "baseline": baseline["replies"][i], "tuned": tuned["replies"][i]}
        for i, (prompt, ex) in enumerate(zip(prompts, _first_row_per_prompt(pairs or unpaired, prompts), strict=True))
    ])
    del tuned_model
    gc.collect()
    return results


@contextmanager
def base_model(run: RunDir, tuned_model, base_path: str, dtype, device: str):
    """The untuned model: the LoRA run's own model with the adapter switched off, or the base loaded anew."""
    if run.trained_weights() == run.adapter:
        with tuned_model.disable_adapter():
            yield tuned_model
        return
    base = load_causal_lm(base_path, dtype, device)
    base.eval()
    try:
        yield base
    finally:
        del base
        gc.collect()


def _unique_prompts(rows: list[dict]) -> list[list[dict]]:
    seen, prompts = set(), []
    for row in rows:
        key = repr(row["prompt"])
        if key not in seen:
            seen.add(key)
            prompts.append(row["prompt"])
    return prompts


def _first_row_per_prompt(rows: list[dict], prompts: list[list[dict]]) -> list[dict]:
    first: dict[str, dict] = {}
    for row in rows:
        first.setdefault(repr(row["prompt"]), row)
    return [first[repr(p)] for p in prompts]


def preference_file_format(config: RunConfig) -> str:
    """How to read an explicit held-out file of a preference run: as data.format when that is a preference
    format, else by detection (a KTO run trained on unpaired rows may be scored on pairs)."""
    return config.data.format if config.data.format in ("preference", "unpaired") else "auto"
