"""Estimate a run before it starts: tokens per epoch, truncated rows, and training time and peak memory
on this machine from a short measured calibration (a few real optimizer steps), plus the GPU memory
the chosen method would need for this model.
"""

from __future__ import annotations

import math
import random
import resource
import statistics
import time

from tuneloop.config.schema import RunConfig
from tuneloop.data.encode import encode_examples
from tuneloop.data.prepare import load_examples, split_validation
from tuneloop.workspace import RunDir

CALIBRATION_STEPS = 3


def estimate_run(config: RunConfig, calibrate: bool = True, console_print=print) -> dict:
    import torch

    from tuneloop.models.device import pick_device, pick_dtype
    from tuneloop.models.registry import resolve_model
    from tuneloop.train.model_setup import setup_model, setup_tokenizer

    base_path = resolve_model(config.model.name, console_print)
    tokenizer = setup_tokenizer(config, base_path)
    examples = load_examples(config.data.train_file, config.data.format, config.data.skip_invalid).examples
    if not config.data.validation_file:
        examples, _ = split_validation(examples, config.data.validation_size, config.seed)
    encoded, stats = encode_examples(tokenizer, examples, config.data.max_length, config.data.train_on_prompt)
    train = config.train
    per_step = train.batch_size * train.gradient_accumulation
    steps_per_epoch = math.ceil(len(encoded) / per_step)
    total_steps = train.max_steps or math.ceil(steps_per_epoch * train.epochs)
    report = {
        "model": config.model.name,
        "method": train.method,
        "examples": len(encoded),
        "tokens_per_epoch": stats.tokens,
        "target_tokens_per_epoch": stats.target_tokens,
        "truncated_rows": stats.truncated,
        "dropped_rows": stats.dropped_no_target,
        "max_length": config.data.max_length,
        "steps": total_steps,
    }
    device = pick_device(config.model.device)
    dtype = pick_dtype(device, config.model.dtype)
    model = setup_model(config, base_path, device, dtype)
    report["gpu_memory_gb"] = gpu_memory_estimate(model, config, max(len(e["input_ids"]) for e in encoded))
    if calibrate:
        step_seconds = _calibrate(model, encoded, train.batch_size, tokenizer.pad_token_id, device, dtype,
                                  train.learning_rate)
        seconds = step_seconds * train.gradient_accumulation * total_steps
        report.update(
            device=device,
            compute_dtype=str(dtype).removeprefix("torch."),
            seconds_per_micro_batch=round(step_seconds, 3),
            estimated_training_seconds=round(seconds),
            peak_rss_gb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        )
    del model
    torch.cuda.empty_cache() if device == "cuda" else None
    return report


def estimate_for_run(config: RunConfig, run: RunDir, console_print=print) -> tuple[float | None, str]:
    """Training seconds of this config on a run directory's prepared splits, from a few calibrated steps, and how
    it was found; None where the data format has no calibration here (classification, NER, text, pairs)."""
    from tuneloop.data.formats import GENERATIVE_FORMATS

    data_format = run.data_format()
    if data_format not in GENERATIVE_FORMATS or data_format == "text":
        return None, f"no calibration for {data_format} data"
    probe = config.model_copy(deep=True)
    probe.data.train_file, probe.data.validation_file = str(run.split("train")), str(run.split("validation"))
    probe.data.format, probe.data.test_file, probe.data.test_size = "auto", None, None
    report = estimate_run(probe, calibrate=True, console_print=lambda *_: None)
    return float(report["estimated_training_seconds"]), f"from {CALIBRATION_STEPS} calibrated optimizer steps"


def _calibrate(model, encoded, batch_size, pad_id, device, dtype, learning_rate) -> float:
    """Median seconds per optimizer step over a few real steps: one warm-up, the longest batch, random ones."""
    import torch

    by_length = sorted(encoded, key=lambda e: len(e["input_ids"]), reverse=True)
    rng = random.Random(0)
    batches = [rng.sample(encoded, min(batch_size, len(encoded)))]  # warm-up
    batches.append(by_length[:batch_size])  # the longest batch sets the memory peak
    batches += [rng.sample(encoded, min(batch_size, len(encoded))) for _ in range(CALIBRATION_STEPS - 1)]
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    model.train()
    timings = []
    for index, batch in enumerate(batches):
        inputs = _pad(batch, pad_id, device)
        started = time.perf_counter()
        with torch.autocast(device_type=device if device != "mps" else "cpu", dtype=dtype,
                            enabled=dtype != torch.float32):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        if index > 0:
            timings.append(time.perf_counter() - started)
    optimizer.zero_grad(set_to_none=True)
    return statistics.median(timings)


def _pad(batch: list[dict], pad_id: int, device: str) -> dict:
    from tuneloop.data.batching import padded_batch

    padded = padded_batch([e["input_ids"] for e in batch], pad_id, [e["labels"] for e in batch])
    return {key: tensor.to(device) for key, tensor in padded.items()}


def gpu_memory_estimate(model, config: RunConfig, longest: int) -> dict:
    """GiB for bf16 training with AdamW (fp32 master weights and moments for what trains).

    weights: bf16 copy of every parameter (2 B) — the frozen base for LoRA;
    training state: fp32 weight + gradient + two Adam moments for each trainable parameter (16 B);
    activations: about 34 bytes per hidden unit per token per layer (Korthikanti et al., bf16, no
    recomputation), a third of that with gradient checkpointing; logits: bf16 logits plus fp32 loss
    buffers, 10 bytes per vocabulary entry per token.
    """
    cfg = model.config if not hasattr(model, "get_base_model") else model.get_base_model().config
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    tokens = config.train.batch_size * min(longest, config.data.max_length)
    hidden = getattr(cfg, "hidden_size", 0)
    layers = getattr(cfg, "num_hidden_layers", 0)
    vocab = getattr(cfg, "vocab_size", 0)
    activations = tokens * hidden * layers * 34 / (3 if config.train.gradient_checkpointing else 1)
    parts = {
        "weights": 2 * total,
        "training_state": 16 * trainable,
        "activations": activations,
        "logits": tokens * vocab * 10,
    }
    gib = {name: round(value / 2**30, 2) for name, value in parts.items()}
    gib["total"] = round(sum(parts.values()) / 2**30, 2)
    gib["trainable_parameters"] = trainable
    gib["parameters"] = total
    return gib
