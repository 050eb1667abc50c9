"""`tuneloop bench`: a model (registry name, folder, hub id) or a run's tuned model scored on a multiple-choice file."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from tuneloop.config.load import load_run_config
from tuneloop.models.multiple_choice import detect_format, load_questions, score_multiple_choice


def bench(
    model_or_run: str,
    file: str,
    fmt: str = "auto",
    limit: int | None = None,
    batch_size: int = 16,
    device: str = "auto",
    dtype: str = "fp32",
) -> dict:
    """Score a model (registry name, HF directory, hub id) or a run's tuned model on a multiple-choice file.

    fp32 by default so the numbers agree with lm-eval's; `seconds` covers loading and scoring.
    """
    from tuneloop.models.device import pick_device, pick_dtype

    started = time.perf_counter()
    fmt = detect_format(file) if fmt == "auto" else fmt
    questions = load_questions(file, fmt, limit)
    device = pick_device(device)
    model, tokenizer = _load_model(model_or_run, pick_dtype(device, dtype), device)
    scores = score_multiple_choice(model, tokenizer, questions, batch_size)
    return {
        "model": model_or_run,
        "file": str(file),
        "format": fmt,
        "n": scores["n"],
        "acc": scores["acc"],
        "acc_norm": scores["acc_norm"],
        "seconds": round(time.perf_counter() - started, 2),
    }


def _load_model(model_or_run: str, dtype: torch.dtype, device: str):
    """The tuned model of a run directory (one with config.yaml), else the model `resolve_model` finds."""
    from tuneloop.models.load import load_causal_lm, load_tokenizer, load_tuned
    from tuneloop.models.registry import resolve_model
    from tuneloop.workspace import open_run_dir

    if (Path(model_or_run) / "config.yaml").is_file():
        run = open_run_dir(model_or_run)
        base_path = resolve_model(load_run_config(run).model.name)
        return load_tuned(run, base_path, dtype, device)
    path = resolve_model(model_or_run)
    model = load_causal_lm(path, dtype, device)
    model.eval()
    return model, load_tokenizer(path)
