"""Pruning: a Trainer callback that reports validation loss to the Optuna trial at each evaluation.

When the pruner says stop, the callback ends training at that evaluation the way early stopping does
(the recipe still saves its weights, log and train_summary.json, so the run directory is complete);
the objective then raises optuna.TrialPruned, and the trial is marked pruned. Pruning always watches
validation loss, the one number every recipe evaluates; a study that maximizes a task metric (accuracy,
ROUGE-L) reports the loss negated, so that higher is better for the pruner as for the study.
"""

from __future__ import annotations

from transformers import TrainerCallback

from tuneloop.train.tracking import Tracker


class PruningCallback(TrainerCallback):
    """Report eval_loss (negated for maximize studies) at each evaluation, keyed by the optimizer step."""

    def __init__(self, trial, direction: str) -> None:
        self.trial = trial
        self.sign = 1.0 if direction == "minimize" else -1.0
        self.pruned_at: int | None = None  # the step the pruner stopped the trial at
        self.reported: dict[int, float] = {}

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics or "eval_loss" not in metrics:
            return control
        step = state.global_step
        value = self.sign * float(metrics["eval_loss"])
        self.trial.report(value, step)
        self.reported[step] = value
        if self.trial.should_prune():
            self.pruned_at = step
            control.should_training_stop = True
        return control


class TrialTracker(Tracker):
    """The run's own tracker, plus the trial's pruning callback on its Trainer (the study is one more place a
    run's metrics go)."""

    def __init__(self, inner: Tracker, pruning: PruningCallback | None) -> None:
        self.inner = inner
        self.pruning = pruning

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.inner.log_metrics(metrics, step)

    def log_artifacts(self, paths) -> None:
        self.inner.log_artifacts(paths)

    def finish(self, status: str = "FINISHED") -> None:
        self.inner.finish(status)

    def trainer_callbacks(self) -> list:
        return self.inner.trainer_callbacks() + ([self.pruning] if self.pruning else [])
