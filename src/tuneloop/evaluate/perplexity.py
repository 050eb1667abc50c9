"""Perplexity on packed text, and the evaluate stage of continued-pretraining runs (domain vs general text).

A text-format run is scored on two sets, each packed into blocks of data.max_length exactly as in
training (tuneloop.data.text_blocks): the held-out domain documents (the test split, else the
validation split) and, when evaluate.general_text names files, general text the run never trained
on. Both the base model and the tuned model are scored, so a domain gain and a general loss
(forgetting) show side by side. Perplexity is exp of the token-weighted mean cross-entropy; the
95% interval and the paired test (baseline vs tuned) resample blocks, given at least 10 blocks.

metrics.json: {"task", "heldout", "validation", "perplexity_sets", "baseline", "tuned", "delta",
"intervals", "comparison", "status", "failures"}, with domain_perplexity / domain_loss and
general_perplexity / general_loss in baseline, tuned and delta.
"""

from __future__ import annotations

import gc
import math

import numpy as np

from tuneloop.config.schema import RunConfig
from tuneloop.data.prepare import load_examples
from tuneloop.data.text_blocks import first_tokens, pack_texts
from tuneloop.data.text_fields import example_text
from tuneloop.evaluate.stats import bootstrap_interval, compare
from tuneloop.train.validation_loss import block_losses, perplexity_scores
from tuneloop.workspace import RunDir, write_json

# A bootstrap over fewer blocks than this gives intervals and p-values that look sure and mean little.
MIN_BLOCKS_FOR_INTERVALS = 10


def general_text_blocks(config: RunConfig, tokenizer) -> tuple[list[list[int]], dict] | None:
    """The evaluate.general_text files packed like training data (capped), and a description; None when unset."""
    if not config.evaluate.general_text:
        return None
    texts = []
    for path in config.evaluate.general_text:
        # Any format tuneloop reads: plain text as is, conversations and instructions as their written text.
        texts += [example_text(ex) for ex in load_examples(path, "auto", skip_invalid=True).examples]
    return _capped(tokenizer, texts, config, files=list(config.evaluate.general_text))


def _capped(tokenizer, texts: list[str], config: RunConfig, **described) -> tuple[list[list[int]], dict]:
    blocks, stats = pack_texts(tokenizer, texts, config.data.max_length)
    scored = first_tokens(blocks, config.evaluate.max_perplexity_tokens)
    return scored, {**described, "documents": stats.documents, "tokens": stats.tokens,
                    "scored_tokens": sum(len(b) for b in scored), "blocks": len(scored)}


def evaluate_pretraining(config: RunConfig, run: RunDir, data_file: str | None = None, console_print=print) -> dict:
    """Domain and general perplexity of the base and the tuned model; writes and returns metrics.json."""
    from tuneloop.evaluate.heldout import heldout_examples, score_baseline
    from tuneloop.models.device import pick_device, pick_dtype
    from tuneloop.models.load import load_tuned
    from tuneloop.models.registry import resolve_model
    from tuneloop.workspace import read_jsonl

    device = pick_device(config.model.device)
    dtype = pick_dtype(device, config.model.dtype)
    base_path = resolve_model(config.model.name, console_print)
    heldout, heldout_name = heldout_examples(config, run, data_file)

    tuned_model, tokenizer = load_tuned(run, base_path, dtype, device)
    sets = {"domain": _capped(tokenizer, [example_text(ex) for ex in heldout], config, split=heldout_name)}
    general = general_text_blocks(config, tokenizer)
    if general:
        sets["general"] = general
    for name, (_, described) in sets.items():
        cap = "" if described["scored_tokens"] == described["tokens"] else (
            f" (the first {described['scored_tokens']:,} of {described['tokens']:,}: evaluate.max_perplexity_tokens)")
        console_print(f"evaluate: {name} text: {described['documents']} document(s), "
                      f"{described['scored_tokens']:,} tokens scored{cap}")

    def score(model, label: str) -> dict:
        batch_size = config.evaluate.batch_size
        per_block = {name: block_losses(model, blocks, batch_size) for name, (blocks, _) in sets.items()}
        totals = {}
        for name, (sums, counts) in per_block.items():
            totals.update(perplexity_scores(sums, counts, name))
        return {"totals": totals, "per_block": per_block}

    tuned = score(tuned_model, "tuned")
    baseline = score_baseline(run, base_path, tuned_model, dtype, device, score) if config.evaluate.baseline else None
    results: dict = {
        "task": "continued pretraining",
        "heldout": {"split": heldout_name, "rows": len(heldout), "rows_with_answer": 0},
        "validation": {"rows": len(read_jsonl(run.split("validation")))},
        "perplexity_sets": {name: described for name, (_, described) in sets.items()},
    }
    if baseline:
        results["baseline"] = baseline["totals"]
    results["tuned"] = tuned["totals"]
    if baseline:
        results["delta"] = {key: value - baseline["totals"][key] for key, value in tuned["totals"].items()}
    if config.evaluate.intervals:
        results.update(_intervals_and_tests(tuned, baseline))
    from tuneloop.evaluate.drift import add_drift_and_guard

    add_drift_and_guard(results, config, run, tuned_model, tokenizer, base_path, dtype, device, console_print)
    results["status"], results["failures"] = "passed", []
    write_json(run.metrics, results)
    run.samples.unlink(missing_ok=True)  # no generated replies here; a stale file would mislead the report
    del tuned_model
    gc.collect()
    return results


def _intervals_and_tests(tuned: dict, baseline: dict | None) -> dict:
    """Bootstrap over blocks: intervals of mean loss (and its exp), and a paired test on per-block loss."""
    sides = {"tuned": tuned} | ({"baseline": baseline} if baseline else {})
    intervals: dict = {side: {} for side in sides}
    comparison = {}
    for name in tuned["per_block"]:
        if len(tuned["per_block"][name][0]) < MIN_BLOCKS_FOR_INTERVALS:
            continue  # the report shows the point values without intervals; perplexity_sets shows the block count
        means = {side: found["per_block"][name][0] / np.maximum(found["per_block"][name][1], 1)
                 for side, found in sides.items()}
        for side, values in means.items():
            low, high = bootstrap_interval(values)
            intervals[side][f"{name}_loss"] = [low, high]
            intervals[side][f"{name}_perplexity"] = [math.exp(min(low, 50.0)), math.exp(min(high, 50.0))]
        if baseline:
            comparison[f"{name}_loss"] = compare(means["baseline"], means["tuned"], binary=False)
    return {"intervals": intervals, "comparison": comparison}

