"""The evaluate stage: score the untuned baseline and the tuned model on the same held-out rows.

Validation loss and perplexity come from the validation split; generation metrics from the test
split (or, when the config has no test file, the validation split, which early stopping has seen:
the report says which). Writes metrics.json ({"baseline": {...}, "tuned": {...}, ...}) and
samples.jsonl (prompt, reference, baseline and tuned replies side by side); summarization runs also get
the length of the summaries in words ("lengths"). Preference runs (dpo, cpo, simpo, orpo, kto) go to
`tuneloop.evaluate.preference`, reward models to `tuneloop.evaluate.reward_model`; evaluate.safety adds
the safety gate (`tuneloop.evaluate.safety`). Encoder-decoder models (T5, BART) read each prompt as
a plain source text (`tuneloop.data.pairs`) instead of through a chat template. Classification runs go
to `tuneloop.evaluate.classification_stage` (head) or `tuneloop.evaluate.classification_generative`,
token-classification (NER) runs to `tuneloop.evaluate.token_classification_stage`, GRPO (prompt_only)
runs to `tuneloop.evaluate.rewards_stage`,
plain-text runs to `tuneloop.evaluate.perplexity`. evaluate.general_text adds general-text perplexity
(general_perplexity) to both sides; evaluate.drift_texts the KL of the tuned model from the base
(`tuneloop.evaluate.drift`), and a run trained with train.guard gets its record ("guard").
"""

from __future__ import annotations

import gc

from tuneloop.config.schema import RunConfig, generation_metrics
from tuneloop.data.encode import encode_examples, render_prompt
from tuneloop.data.pairs import encode_pairs, source_text
from tuneloop.evaluate.drift import add_drift_and_guard
from tuneloop.evaluate.forgetting import forgetting_failures, forgetting_report
from tuneloop.evaluate.heldout import heldout_examples, score_baseline
from tuneloop.evaluate.metrics import corpus_bleu, corpus_chrf, generation_scores, length_statistics
from tuneloop.evaluate.perplexity import general_text_blocks
from tuneloop.evaluate.stats import bootstrap_interval, compare, corpus_bootstrap_interval
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.generate import generate_replies
from tuneloop.models.load import is_encoder_decoder, load_tuned
from tuneloop.models.multiple_choice import load_questions, score_multiple_choice
from tuneloop.models.registry import resolve_model
from tuneloop.train.validation_loss import block_losses, perplexity_scores, validation_loss
from tuneloop.workspace import RunDir, read_jsonl, write_json, write_jsonl

RIGHT_OR_WRONG_METRICS = ("exact_match", "contains_answer")


def evaluate_run(config: RunConfig, run: RunDir, data_file: str | None = None, console_print=print) -> dict:
    if config.train.recipe == "reward":
        from tuneloop.evaluate.reward_model import evaluate_reward_run

        return evaluate_reward_run(config, run, data_file, console_print)
    if run.data_format() in ("preference", "unpaired"):
        from tuneloop.evaluate.preference import evaluate_preference_run

        return evaluate_preference_run(config, run, data_file, console_print)
    if run.data_format() == "classification" and config.train.classifier == "generate":
        from tuneloop.evaluate.classification_generative import evaluate_generative_classifier

        return evaluate_generative_classifier(config, run, data_file, console_print)
    if run.data_format() == "classification":
        from tuneloop.evaluate.classification_stage import evaluate_classifier

        return evaluate_classifier(config, run, data_file, console_print)
    if run.data_format() == "token_classification":
        from tuneloop.evaluate.token_classification_stage import evaluate_token_classifier

        return evaluate_token_classifier(config, run, data_file, console_print)
    if run.data_format() == "prompt_only":
        from tuneloop.evaluate.rewards_stage import evaluate_grpo

        return evaluate_grpo(config, run, data_file, console_print)
    if run.data_format() == "text":
        from tuneloop.evaluate.perplexity import evaluate_pretraining

        return evaluate_pretraining(config, run, data_file, console_print)
    device = pick_device(config.model.device)
    dtype = pick_dtype(device, config.model.dtype)
    base_path = resolve_model(config.model.name, console_print)

    heldout, heldout_name = heldout_examples(config, run, data_file)
    validation = read_jsonl(run.split("validation"))
    scored = [ex for ex in heldout if "messages" in ex][: config.evaluate.max_samples]
    if not scored:
        console_print("evaluate: the held-out rows are plain text; reporting loss and perplexity only")

    tuned_model, tokenizer = load_tuned(run, base_path, dtype, device)
    seq2seq = is_encoder_decoder(base_path)
    if seq2seq:
        prompts = [source_text(ex["messages"]) for ex in scored]
        validation_encoded, _ = encode_pairs(tokenizer, validation, config.data.max_length)
    else:
        prompts = [render_prompt(tokenizer, ex["messages"], ex.get("tools")) for ex in scored]
        validation_encoded, _ = encode_examples(
            tokenizer, validation, config.data.max_length, config.data.train_on_prompt
        )
    references = [ex["messages"][-1]["content"] for ex in scored]
    answers = [ex.get("answer", ref) for ex, ref in zip(scored, references, strict=True)]
    metrics = generation_metrics(config.evaluate, run.data_format())

    general = general_text_blocks(config, tokenizer)  # (blocks, description) or None
    questions = {
        path: load_questions(path, config.evaluate.forgetting_format, config.evaluate.forgetting_limit)
        for path in config.evaluate.forgetting
    }

    gate = None
    if config.evaluate.safety is not None and not seq2seq:
        from tuneloop.evaluate.safety import SafetyGate

        gate = SafetyGate(config.evaluate.safety, tokenizer, config.evaluate)

    def score(model, label: str) -> dict:
        if gate is not None:
            gate.generate(model, label)
        scored_side = {"totals": validation_loss(model, validation_encoded, tokenizer.pad_token_id,
                                                 config.evaluate.batch_size), "replies": [], "per_row": {}}
        if prompts:  # plain-text data has no replies to generate; loss and perplexity still say a lot
            replies = generate_replies(
                model, tokenizer, prompts, config.evaluate.max_new_tokens, config.evaluate.batch_size, desc=label,
                max_prompt_tokens=config.data.max_length if seq2seq else None,
            )
            totals, per_row = generation_scores(replies, references, answers, metrics)
            scored_side.update(replies=replies, per_row=per_row)
            scored_side["totals"].update(totals)
        if general:
            scored_side["totals"].update(perplexity_scores(*block_losses(model, general[0], config.evaluate.batch_size),
                                                           "general"))
        scored_side["forgetting"] = {
            path: score_multiple_choice(model, tokenizer, items, config.evaluate.batch_size)
            for path, items in questions.items()
        }
        return scored_side

    results: dict = {
        "heldout": {"split": heldout_name, "rows": len(scored),
                    "rows_with_answer": sum(1 for ex in scored if ex.get("answer"))},
        "validation": {"rows": len(validation_encoded)},
    }
    if general:
        results["perplexity_sets"] = {"general": general[1]}
    tuned = score(tuned_model, "tuned")
    baseline = None
    if config.evaluate.baseline:
        baseline = score_baseline(run, base_path, tuned_model, dtype, device, score)
        results["baseline"] = baseline["totals"]
    results["tuned"] = tuned["totals"]
    if baseline:
        results["delta"] = {
            key: tuned["totals"][key] - baseline["totals"][key]
            for key in tuned["totals"]
            if key in baseline["totals"] and key != "validation_tokens"
        }
    if config.evaluate.intervals and prompts:
        results.update(_intervals_and_tests(tuned, baseline, references))
    if run.data_format() == "summarization" and prompts:
        replies = ({"baseline": baseline["replies"]} if baseline else {}) | {"tuned": tuned["replies"]}
        results["lengths"] = length_statistics(references, replies)
    if questions:
        results["forgetting"] = forgetting_report(tuned, baseline, config.evaluate.max_forgetting)
    add_drift_and_guard(results, config, run, tuned_model, tokenizer, base_path, dtype, device, console_print)
    failures = forgetting_failures(results, config.evaluate.max_forgetting)
    if gate is not None and baseline:
        results["safety"] = gate.verdict(device, console_print)
        failures += results["safety"]["failures"]
    results["status"] = "failed" if failures else "passed"
    results["failures"] = failures
    baseline_replies = baseline["replies"] if baseline else []
    tuned_replies = tuned["replies"]
    write_json(run.metrics, results)
    write_jsonl(
        run.samples,
        [
            {
                "prompt": ex["messages"][:-1],
                "reference": ref,
                "answer": ex.get("answer"),
                "baseline": baseline_replies[i] if baseline_replies else None,
                "tuned": tuned_replies[i],
            }
            for i, (ex, ref) in enumerate(zip(scored, references, strict=True))
        ],
    )
    del tuned_model
    gc.collect()
    return results


def _intervals_and_tests(tuned: dict, baseline: dict | None, references: list[str]) -> dict:
    """95% bootstrap intervals for every generation metric, and a paired test against the baseline."""
    corpus_metrics = {"bleu": corpus_bleu, "chrf": corpus_chrf}
    sides = {"tuned": tuned} | ({"baseline": baseline} if baseline else {})
    intervals: dict = {}
    for name, side in sides.items():
        intervals[name] = {metric: list(bootstrap_interval(values)) for metric, values in side["per_row"].items()}
        for metric, function in corpus_metrics.items():
            if metric in side["totals"]:
                intervals[name][metric] = list(corpus_bootstrap_interval(side["replies"], references, function))
    found = {"intervals": intervals}
    if baseline:
        # The metric decides the test, not the values: a graded score that happens to be all zeros is still graded.
        found["comparison"] = {
            metric: compare(baseline["per_row"][metric], values, binary=metric in RIGHT_OR_WRONG_METRICS)
            for metric, values in tuned["per_row"].items()
        }
    return found
