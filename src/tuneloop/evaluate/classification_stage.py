"""The evaluate stage for classification runs: the tuned classifier against the majority-class baseline.

An untuned model with a new head (encoder or causal LM) has a random head, so "the untuned model"
says nothing; the honest floor is the
predictor that always answers the most common training label (the most common label set for
multi-label rows). Scores come from the test split, or the validation split when there is none.
Writes metrics.json (baseline, tuned, delta, intervals, McNemar comparison, and under
"classification" the confusion matrix, per-class scores and ROC curves of the tuned model) and
samples.jsonl in the same shape as the generative stage, so the report and review sheet work as is.
"""

from __future__ import annotations

import gc
from collections import Counter

import numpy as np

from tuneloop.config.schema import RunConfig
from tuneloop.data.labels import check_known_labels, row_labels
from tuneloop.evaluate.classification import classification_scores, multilabel_scores
from tuneloop.evaluate.heldout import heldout_examples
from tuneloop.evaluate.stats import bootstrap_interval, compare
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.load import load_tuned_classifier
from tuneloop.models.registry import resolve_model
from tuneloop.workspace import RunDir, read_jsonl, write_json, write_jsonl

# The headline numbers, all 0-100; the rest of classification_scores goes under "classification".
SUMMARY_METRICS = ("accuracy", "f1_macro", "f1_micro", "precision_macro", "recall_macro")
MULTI_LABEL_THRESHOLD = 0.5


def evaluate_classifier(config: RunConfig, run: RunDir, data_file: str | None = None, console_print=print) -> dict:
    device = pick_device(config.model.device)
    dtype = pick_dtype(device, config.model.dtype)
    model, tokenizer = load_tuned_classifier(run, resolve_model(config.model.name, console_print), dtype, device)
    labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    multi_label = model.config.problem_type == "multi_label_classification"

    heldout, heldout_name = heldout_examples(config, run, data_file)
    check_known_labels(heldout, labels, heldout_name.split(" ")[0])
    train_rows = read_jsonl(run.split("train"))
    texts = [row["text"] for row in heldout]
    truth = [_as_answer(row["label"], multi_label) for row in heldout]

    probabilities = predict_probabilities(model, tokenizer, texts, config.data.max_length, config.evaluate.batch_size,
                                          multi_label)
    predicted = _predictions(probabilities, labels, multi_label)
    majority = majority_answer(train_rows, multi_label)
    baseline_predicted = [majority] * len(heldout)
    console_print(f"evaluate: {len(heldout)} {heldout_name} rows; baseline: always {_shown(majority)!r}")

    results = write_classification_results(
        config, run, heldout_name=heldout_name, texts=texts, truth=truth, predicted=predicted, labels=labels,
        probabilities=probabilities, baseline_predicted=baseline_predicted,
        baseline_kind="majority label set" if multi_label else "majority class", multi_label=multi_label,
    )
    del model
    gc.collect()
    return results


def write_classification_results(
    config: RunConfig, run: RunDir, *, heldout_name: str, texts: list[str], truth: list, predicted: list,
    labels: list[str], probabilities: np.ndarray | None, baseline_predicted: list, baseline_kind: str,
    multi_label: bool = False,
) -> dict:
    """Score tuned and baseline predictions of the held-out rows; write metrics.json and samples.jsonl.

    Shared by every classifier variant (head, generated label), so their metrics.json read the same.
    """
    if multi_label:
        tuned = multilabel_scores(truth, predicted, labels)
        baseline = multilabel_scores(truth, baseline_predicted, labels)
        tuned["accuracy"], baseline["accuracy"] = tuned["subset_accuracy"], baseline["subset_accuracy"]
    else:
        tuned = classification_scores(truth, predicted, labels, probabilities)
        baseline = classification_scores(truth, baseline_predicted, labels)

    results = {
        "task": "multi-label classification" if multi_label else "classification",
        "heldout": {"split": heldout_name, "rows": len(texts), "rows_with_answer": len(texts)},
        "validation": {"rows": len(read_jsonl(run.split("validation")))},
        "baseline_kind": baseline_kind,
        "baseline": _summary(baseline),
        "tuned": _summary(tuned),
    }
    results["delta"] = {key: results["tuned"][key] - results["baseline"][key] for key in results["tuned"]}
    if config.evaluate.intervals:
        results.update(_intervals_and_test(baseline["correct"], tuned["correct"]))
    results["classification"] = _details(tuned, multi_label)
    results["status"], results["failures"] = "passed", []
    write_json(run.metrics, results)
    write_jsonl(run.samples, [
        {"prompt": [{"role": "user", "content": text}], "reference": _shown(answer), "answer": _shown(answer),
         "baseline": _shown(base_guess), "tuned": _shown(guess)}
        for text, answer, guess, base_guess in zip(texts, truth, predicted, baseline_predicted, strict=True)
    ])
    return results


def predict_probabilities(model, tokenizer, texts: list[str], max_length: int, batch_size: int,
                          multi_label: bool) -> np.ndarray:
    """Rows x labels: softmax over the labels, or an independent sigmoid per label for multi-label models."""
    import torch

    device = next(model.parameters()).device
    batches = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            encoded = tokenizer(texts[start:start + batch_size], truncation=True, max_length=max_length,
                                padding=True, return_tensors="pt").to(device)
            logits = model(**encoded).logits.float()
            batches.append((logits.sigmoid() if multi_label else logits.softmax(-1)).cpu().numpy())
    return np.concatenate(batches) if batches else np.zeros((0, model.config.num_labels))


def majority_answer(train_rows: list[dict], multi_label: bool) -> str | list[str]:
    """The most common training label (label set for multi-label); ties go to the first in sorted order."""
    counts = Counter(tuple(sorted(row_labels(row))) if multi_label else row["label"] for row in train_rows)
    best = max(counts.values())
    winner = min(answer for answer, count in counts.items() if count == best)
    return list(winner) if multi_label else winner


def _as_answer(label: str | list[str], multi_label: bool) -> str | list[str]:
    if multi_label:
        return sorted(label) if isinstance(label, list) else [label]
    return label


def _predictions(probabilities: np.ndarray, labels: list[str], multi_label: bool) -> list:
    if multi_label:
        return [[label for label, p in zip(labels, row, strict=True) if p >= MULTI_LABEL_THRESHOLD]
                for row in probabilities]
    return [labels[i] for i in probabilities.argmax(axis=1)]


def _summary(scores: dict) -> dict:
    summary = {key: scores[key] for key in SUMMARY_METRICS}
    if "hamming_loss" in scores:
        summary["hamming_loss"] = scores["hamming_loss"]
    return summary


def _intervals_and_test(baseline_correct: list[bool], tuned_correct: list[bool]) -> dict:
    """95% bootstrap intervals on accuracy and McNemar's test, on 0/100 per row so differences read as points."""
    baseline_points = [100.0 * c for c in baseline_correct]
    tuned_points = [100.0 * c for c in tuned_correct]
    return {
        "intervals": {"baseline": {"accuracy": list(bootstrap_interval(baseline_points))},
                      "tuned": {"accuracy": list(bootstrap_interval(tuned_points))}},
        "comparison": {"accuracy": compare(baseline_points, tuned_points, binary=True)} if tuned_points else {},
    }


def _details(tuned: dict, multi_label: bool) -> dict:
    keys = ("per_class",) if multi_label else (
        "per_class", "confusion_matrix", "roc_curves", "pr_curves", "roc_auc_macro", "roc_auc_undefined_for"
    )
    return {key: tuned[key] for key in keys if key in tuned}


def _shown(answer: str | list[str]) -> str:
    return ", ".join(answer) if isinstance(answer, list) else answer
