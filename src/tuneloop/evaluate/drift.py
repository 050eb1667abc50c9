"""Drift from the base: per-token KL(tuned || base) on general text, with a bootstrap interval over documents.

A more sensitive forgetting signal than multiple-choice accuracy on a few hundred questions: every
token of every document says how far the tuned model's next-token distribution moved from the base
model's. evaluate.drift_texts names the files (any format tuneloop reads; every row, or every
paragraph of a .txt file, is one document, cut at data.max_length tokens); the first
evaluate.drift_max_documents documents are scored. The statistic is token-weighted (sum of KL over
all tokens / tokens) and the 95% interval resamples documents.

metrics.json: "drift": {"kl_per_token", "interval", "documents", "tokens", "files"}.
"""

from __future__ import annotations

import contextlib
import gc

import numpy as np

from tuneloop.train.guard.drift import document_kl, drift_documents


def ratio_interval(sums: np.ndarray, counts: np.ndarray, resamples: int = 2000, seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval of sum(sums) / sum(counts), resampling documents."""
    if len(sums) < 2:
        value = float(sums.sum() / max(counts.sum(), 1))
        return [value, value]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(sums), size=(resamples, len(sums)))
    ratios = sums[picks].sum(axis=1) / np.maximum(counts[picks].sum(axis=1), 1)
    return [float(np.percentile(ratios, 2.5)), float(np.percentile(ratios, 97.5))]


def drift_summary(sums: np.ndarray, counts: np.ndarray, files: list[str]) -> dict:
    return {"kl_per_token": float(sums.sum() / max(counts.sum(), 1)), "interval": ratio_interval(sums, counts),
            "documents": int(len(sums)), "tokens": int(counts.sum()), "files": list(files)}


def measure_drift(tuned_model, base_path: str, documents: list[list[int]], pad_token_id: int, dtype, device: str,
                  files: list[str]) -> dict:
    """KL(tuned || base) on the documents: LoRA runs switch the adapter off, full fine-tunes load the base."""
    from tuneloop.models.load import load_generator

    if hasattr(tuned_model, "disable_adapter"):
        def reference(ids, mask):
            with tuned_model.disable_adapter():
                return tuned_model(input_ids=ids, attention_mask=mask).logits
        return drift_summary(*document_kl(tuned_model, reference, documents, pad_token_id), files)
    base = load_generator(base_path, dtype, device)
    base.eval()
    with contextlib.suppress(AttributeError):
        tuned_model.eval()
    found = drift_summary(*document_kl(tuned_model, lambda ids, mask: base(input_ids=ids, attention_mask=mask).logits,
                                       documents, pad_token_id), files)
    base = None  # free the second copy before evaluation goes on
    gc.collect()
    return found


def add_drift_and_guard(results: dict, config, run, tuned_model, tokenizer, base_path: str, dtype, device: str,
                        console_print=print) -> None:
    """Put "drift" (evaluate.drift_texts) and "guard" (what train.guard did, from guard.json) into results."""
    from tuneloop.train.guard.switches import GUARD_RECORD
    from tuneloop.workspace import read_json

    if config.evaluate.drift_texts:
        documents = drift_documents(config.evaluate.drift_texts, tokenizer, config.data.max_length,
                                    config.evaluate.drift_max_documents)
        if documents:
            results["drift"] = measure_drift(tuned_model, base_path, documents, tokenizer.pad_token_id, dtype, device,
                                             config.evaluate.drift_texts)
            low, high = results["drift"]["interval"]
            console_print(f"evaluate: drift KL(tuned || base) {results['drift']['kl_per_token']:.4f} nats/token "
                          f"[{low:.4f}, {high:.4f}] on {len(documents)} general document(s)")
        else:
            console_print("evaluate: evaluate.drift_texts holds no document of 2 or more tokens; no drift measured")
    record = run.root / GUARD_RECORD
    if record.is_file():
        results["guard"] = read_json(record)
