"""Run a prepared Trainer the way every recipe does: stop cleanly on a signal, then summarize what happened."""

from __future__ import annotations

import time

from tuneloop.errors import TuneloopError
from tuneloop.train.callbacks import GracefulInterrupt
from tuneloop.workspace import RunDir


class TrainingInterrupted(TuneloopError):
    exit_code = 130


def fit(trainer, run: RunDir, checkpoint) -> tuple[object, float]:
    """trainer.train() (resuming from `checkpoint` if given); the result and the seconds it took.

    Raises TrainingInterrupted after Ctrl-C or SIGTERM, once the checkpoint of the current step is saved.
    """
    started = time.perf_counter()
    with GracefulInterrupt() as interrupt:
        trainer.add_callback(interrupt)
        result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if interrupt.requested:
        raise TrainingInterrupted(
            f"interrupted at step {trainer.state.global_step}; checkpoint saved in {run.checkpoints}. "
            f"Continue with `tuneloop run {run.config} --resume` (or `tuneloop train ... --resume`)."
        )
    return result, time.perf_counter() - started


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
    }
