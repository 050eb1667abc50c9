"""Experiment tracking: MLflow (default, a local SQLite store), Weights & Biases (offline by default) or none.

A run directory maps to one tracked run; its id is kept in tracking.json so a resumed run keeps
logging to the same place. Parameters are the flattened config; per-step training metrics come
from a Trainer callback; evaluation metrics and artifacts (report.html, metrics.json, config) are
logged when the run finishes. `mlflow ui --backend-store-uri sqlite:///runs/mlflow.db` shows them.
"""

from __future__ import annotations

import os
from pathlib import Path

from transformers import TrainerCallback

from tuneloop.config.schema import RunConfig, TrackingConfig
from tuneloop.errors import TuneloopError
from tuneloop.workspace import RunDir, flatten, read_json, write_json


class Tracker:
    """No tracking: the interface the real trackers fill in."""

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        pass

    def log_artifacts(self, paths: list[Path]) -> None:
        pass

    def finish(self, status: str = "FINISHED") -> None:
        pass

    def trainer_callbacks(self) -> list:
        """Extra Trainer callbacks that go with this tracker (a search trial adds its pruning callback)."""
        return []


class MlflowTracker(Tracker):
    def __init__(self, config: TrackingConfig, run: RunDir, params: dict) -> None:
        import logging

        import mlflow

        logging.getLogger("mlflow").setLevel(logging.WARNING)  # its table-creation notices are noise here
        self.mlflow = mlflow
        store = run.root.resolve().parent
        mlflow.set_tracking_uri(config.uri or f"sqlite:///{store / 'mlflow.db'}")
        experiment = mlflow.get_experiment_by_name(config.experiment)
        experiment_id = (
            experiment.experiment_id if experiment else
            mlflow.create_experiment(config.experiment, artifact_location=(store / "mlartifacts").as_uri())
        )
        previous = _previous_id(run, "mlflow")
        self.active = mlflow.start_run(run_id=previous, experiment_id=None if previous else experiment_id,
                                       run_name=None if previous else run.root.name)
        _remember_id(run, "mlflow", self.active.info.run_id)
        if not previous:
            mlflow.log_params({key: str(value)[:500] for key, value in params.items()})

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        numeric = {key: float(v) for key, v in metrics.items() if isinstance(v, int | float)}
        if numeric:
            self.mlflow.log_metrics(numeric, step=step)

    def log_artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            if path.is_file():
                self.mlflow.log_artifact(str(path))

    def finish(self, status: str = "FINISHED") -> None:
        self.mlflow.end_run(status=status)


class WandbTracker(Tracker):
    def __init__(self, config: TrackingConfig, run: RunDir, params: dict) -> None:
        try:
            import wandb
        except ImportError:
            raise TuneloopError("tracking.backend: wandb is not installed; `pip install wandb`, or choose "
                                "tracking.backend: mlflow or none.") from None
        os.environ.setdefault("WANDB_MODE", config.wandb_mode)
        self.wandb = wandb
        previous = _previous_id(run, "wandb")
        self.active = wandb.init(project=config.experiment, name=run.root.name, config=params, dir=str(run.root),
                                 id=previous, resume="allow" if previous else None)
        _remember_id(run, "wandb", self.active.id)

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        self.active.log({k: v for k, v in metrics.items() if isinstance(v, int | float)}, step=step)

    def log_artifacts(self, paths: list[Path]) -> None:
        for path in paths:
            if path.is_file():
                self.active.save(str(path), base_path=str(path.parent))

    def finish(self, status: str = "FINISHED") -> None:
        self.active.finish(exit_code=0 if status == "FINISHED" else 1)


def start_tracking(config: RunConfig, run: RunDir) -> Tracker:
    params = flatten(config.model_dump(mode="json"))
    backend = config.tracking.backend
    if backend == "mlflow":
        return MlflowTracker(config.tracking, run, params)
    if backend == "wandb":
        return WandbTracker(config.tracking, run, params)
    return Tracker()


class TrackingCallback(TrainerCallback):
    """Send every Trainer log record (loss, eval loss, learning rate, tokens seen) to the tracker."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            self.tracker.log_metrics({f"train/{k}": v for k, v in logs.items()}, step=state.global_step)


def log_results(tracker: Tracker, run: RunDir) -> None:
    """Evaluation numbers and the run's main files, once the run is complete."""
    if run.metrics.is_file():
        metrics = read_json(run.metrics)
        for side in ("baseline", "tuned", "delta"):
            tracker.log_metrics({f"{side}/{key}": value for key, value in metrics.get(side, {}).items()})
    tracker.log_artifacts([run.root / "report.html", run.metrics, run.config, run.manifest,
                           run.root / "audit" / "audit.html"])


def _previous_id(run: RunDir, backend: str) -> str | None:
    path = run.root / "tracking.json"
    return read_json(path).get(backend) if path.is_file() else None


def _remember_id(run: RunDir, backend: str, run_id: str) -> None:
    path = run.root / "tracking.json"
    ids = read_json(path) if path.is_file() else {}
    ids[backend] = run_id
    write_json(path, ids)
