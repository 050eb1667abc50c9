"""Run a prepared Trainer the way every recipe does: stop cleanly on a signal, then save, summarize and free memory.

finish_training is the one place for what every recipe does after training: process 0 saves the weights
(save_trained: adapter/ or model/ with the tokenizer, which carries the chat template) and writes
train_summary.json; release_memory empties the accelerator's cache once the recipe dropped its trainer.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tuneloop.errors import TrainingInterrupted
from tuneloop.train.allocator import current_allocator
from tuneloop.train.callbacks import GracefulInterrupt, ProgressCallback
from tuneloop.workspace import RunDir, read_jsonl, write_json, write_jsonl


def resume_point(run: RunDir, resume: bool, console_print=print):
    """The checkpoint to continue from (None: start over), with the training log cut back to match it."""
    checkpoint = run.last_checkpoint() if resume else None
    if resume and checkpoint is None:
        console_print("resume: no checkpoint in this run directory yet; starting from the beginning")
    if not is_main_process():
        return checkpoint
    if checkpoint is None:
        run.train_log.unlink(missing_ok=True)
    elif run.train_log.is_file():
        # Steps after the checkpoint are about to run again: forget their records.
        step = int(checkpoint.name.split("-")[-1])
        write_jsonl(run.train_log, [r for r in read_jsonl(run.train_log) if r.get("step", 0) <= step])
    return checkpoint


def is_main_process() -> bool:
    """False in every process but the first of a multi-process run (torchrun sets RANK)."""
    return os.environ.get("RANK", "0") == "0"


def fit(trainer, run: RunDir, checkpoint) -> tuple[object, float]:
    """trainer.train() (resuming from `checkpoint` if given); the result and the seconds it took.

    Raises TrainingInterrupted after Ctrl-C or SIGTERM, once the checkpoint of the current step is saved.
    """
    started = time.perf_counter()
    with GracefulInterrupt() as interrupt:
        trainer.add_callback(interrupt)
        try:
            result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        except Exception:
            _close_progress_bars(trainer)  # so the error prints on its own line, not after a half-drawn bar
            raise
    if interrupt.requested:
        raise TrainingInterrupted(
            f"interrupted at step {trainer.state.global_step}; checkpoint saved in {run.checkpoints}. "
            f"Continue with `tuneloop run {run.config} --resume` (or `tuneloop train ... --resume`)."
        )
    return result, time.perf_counter() - started


def _close_progress_bars(trainer) -> None:
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, ProgressCallback) and callback.bar is not None:
            callback.bar.close()
            callback.bar = None


def training_summary(trainer, result, seconds: float, model, method: str, device: str, compute_dtype) -> dict:
    """What train_summary.json records for any recipe."""
    tokens = trainer.state.num_input_tokens_seen
    return {
        "method": method,
        "device": device,
        "compute_dtype": str(compute_dtype).removeprefix("torch."),
        "steps": trainer.state.global_step,
        "epochs": trainer.state.epoch,
        "train_loss": result.training_loss,
        "best_validation_loss": trainer.state.best_metric,
        "best_checkpoint": trainer.state.best_model_checkpoint,
        "tokens_seen": tokens,
        "seconds": round(seconds, 1),
        "tokens_per_second": round(tokens / seconds, 1) if seconds else None,
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "peak_memory_mb": peak_memory_mb(device),
        "allocator": current_allocator(),
    }


def save_trained(model, tokenizer, target: Path, **save_options) -> None:
    """The trained model (adapter or whole) and its tokenizer, which carries the chat template used in training."""
    model.save_pretrained(str(target), **save_options)
    tokenizer.save_pretrained(str(target))


def finish_training(trainer, tokenizer, config, run: RunDir, result, seconds: float, device: str, compute_dtype,
                    save=None, model=None, **details) -> dict:
    """Save (process 0 only), summarize and write train_summary.json; returns the summary.

    save(trainer) saves the weights a recipe's own way; by default the trained model and tokenizer go to
    adapter/ (adapter methods) or model/. model is what the summary counts parameters of (trainer.model by
    default); details are added to the summary (task, recipe, labels, ...).
    """
    from tuneloop.train.arguments import uses_adapter

    main_process = trainer.is_world_process_zero()  # in a multi-process run, process 0 alone writes
    if main_process:
        if save is not None:
            save(trainer)
        else:
            target = run.adapter if uses_adapter(config.train.method) else run.model
            save_trained(trainer.model, tokenizer, target)
    summary = training_summary(trainer, result, seconds, model if model is not None else trainer.model,
                               config.train.method, device, compute_dtype)
    summary.update(details)
    if main_process:
        write_json(run.root / "train_summary.json", summary)
    return summary


def release_memory(device: str) -> None:
    """Give the accelerator's cached memory back once the trainer and model are gone (CUDA only)."""
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def peak_memory_mb(device: str) -> float | None:
    """The process's peak memory so far: resident set (VmHWM, Linux) on a CPU, allocated memory on a CUDA GPU."""
    if device == "cuda":
        import torch

        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
    except OSError:  # not Linux
        return None
    return None
