"""The evaluate stage: score the untuned baseline and the tuned model on the same held-out rows.

Validation loss and perplexity come from the validation split; generation metrics from the test
split (or, when the config has no test file, the validation split, which early stopping has seen:
the report says which). Writes metrics.json ({"baseline": {...}, "tuned": {...}, ...}) and
samples.jsonl (prompt, reference, baseline and tuned replies side by side).
"""

from __future__ import annotations

import gc

from tuneloop.config import RunConfig
from tuneloop.data.encode import encode_examples, render_prompt
from tuneloop.data.prepare import load_examples
from tuneloop.evaluate.generate import generate_replies
from tuneloop.evaluate.loss import validation_loss
from tuneloop.evaluate.metrics import generation_scores
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.load import load_causal_lm, load_tuned
from tuneloop.models.registry import resolve_model
from tuneloop.workspace import RunDir, read_jsonl, write_json, write_jsonl


def evaluate_run(config: RunConfig, run: RunDir, data_file: str | None = None, console_print=print) -> dict:
    device = pick_device(config.model.device)
    dtype = pick_dtype(device, config.model.dtype)
    base_path = resolve_model(config.model.name, console_print)

    heldout, heldout_name = _heldout_examples(config, run, data_file)
    validation = read_jsonl(run.split("validation"))
    scored = [ex for ex in heldout if "messages" in ex][: config.evaluate.max_samples]
    if not scored:
        console_print("evaluate: the held-out rows are plain text; reporting loss and perplexity only")

    tuned_model, tokenizer = load_tuned(run, base_path, dtype, device)
    prompts = [render_prompt(tokenizer, ex["messages"]) for ex in scored]
    references = [ex["messages"][-1]["content"] for ex in scored]
    answers = [ex.get("answer", ref) for ex, ref in zip(scored, references, strict=True)]
    validation_encoded, _ = encode_examples(tokenizer, validation, config.data.max_length, config.data.train_on_prompt)

    def score(model, label: str) -> tuple[dict, list[str]]:
        metrics = validation_loss(model, validation_encoded, tokenizer.pad_token_id, config.evaluate.batch_size)
        if not prompts:  # plain-text data has no replies to generate; loss and perplexity still say a lot
            return metrics, []
        replies = generate_replies(
            model, tokenizer, prompts, config.evaluate.max_new_tokens, config.evaluate.batch_size, desc=label
        )
        totals, _ = generation_scores(replies, references, answers, config.evaluate.metrics)
        return {**metrics, **totals}, replies

    results: dict = {
        "heldout": {"split": heldout_name, "rows": len(scored)},
        "validation": {"rows": len(validation_encoded)},
    }
    tuned_scores, tuned_replies = score(tuned_model, "tuned")
    baseline_replies: list[str] = []
    if config.evaluate.baseline:
        baseline_scores, baseline_replies = _score_baseline(config, run, base_path, tuned_model, tokenizer, dtype,
                                                            device, score)
        results["baseline"] = baseline_scores
    results["tuned"] = tuned_scores
    if "baseline" in results:
        results["delta"] = {
            key: tuned_scores[key] - results["baseline"][key]
            for key in tuned_scores
            if key in results["baseline"] and key != "validation_tokens"
        }
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


def _heldout_examples(config: RunConfig, run: RunDir, data_file: str | None) -> tuple[list[dict], str]:
    if data_file:
        return load_examples(data_file, config.data.format, config.data.skip_invalid).examples, str(data_file)
    if run.split("test").is_file():
        return read_jsonl(run.split("test")), "test"
    return read_jsonl(run.split("validation")), "validation (seen by early stopping; add data.test_file)"


def _score_baseline(config, run, base_path, tuned_model, tokenizer, dtype, device, score):
    if run.trained_weights() == run.adapter:
        # The LoRA base is already loaded: switching the adapter off gives the untuned model exactly.
        with tuned_model.disable_adapter():
            return score(tuned_model, "baseline")
    base = load_causal_lm(base_path, dtype, device)
    base.eval()
    try:
        return score(base, "baseline")
    finally:
        del base
        gc.collect()

