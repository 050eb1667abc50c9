"""A trial is an ordinary run: its config is the base config with the trial's values put in, and its
objective is read from validation data only.

The trial's config has no test file (data.test_file is removed; a data.test_size split still happens, so
the same rows stay out of training, but nothing scores them), so no trial can read the test set. Only the
data and train stages run (`tuneloop.stages`), as `tuneloop train` would; a task metric (accuracy, ROUGE-L)
is then scored by the evaluate stage on the run's own validation split, written to validation_metrics.json.
Each run directory ends with trial.json: the trial's number, values, state and objective.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.config.load import validate_config
from tuneloop.config.schema import RunConfig
from tuneloop.config.search_space import with_values
from tuneloop.errors import TuneloopError
from tuneloop.stages import data_stage, evaluate_stage, open_for_run, resolve_defaults, train_stage
from tuneloop.train.tracking import start_tracking
from tuneloop.tune.pruning import PruningCallback, TrialTracker
from tuneloop.workspace import RunDir, read_json, read_jsonl, write_json


@dataclass
class TrialOutcome:
    run: RunDir
    value: float | None  # None when pruned
    steps: int  # optimizer steps actually run
    pruned_at: int | None


def base_raw(config: RunConfig) -> dict[str, Any]:
    """The keys the config sets, as a plain mapping without its search block: what every trial starts from.

    Keys left out stay out, so each trial gets the defaults table's values for them (tuneloop.train.defaults),
    as a plain run of the config would.
    """
    raw = config.model_dump(mode="json", exclude_unset=True)
    raw.pop("search", None)
    return raw


def trial_config(base: dict, values: dict[str, Any], output_dir: Path, tracking: dict | None = None) -> RunConfig:
    """The run config of one trial: base + values, its own output_dir, no test file; `tracking` overrides keys of
    the tracking section (the study's experiment and store)."""
    raw = with_values(base, values)
    raw["output_dir"] = str(output_dir)
    raw["data"]["test_file"] = None
    raw.setdefault("tracking", {}).update(tracking or {})
    return validate_config(raw, f"trial config ({output_dir})")


def run_trial_config(config: RunConfig, metric: str, pruning: PruningCallback | None = None,
                     console_print=print) -> TrialOutcome:
    """Data + train in config.output_dir (replacing what a lost attempt left there), then the objective."""
    run = open_for_run(config, overwrite=True)
    tracker = TrialTracker(start_tracking(config, run), pruning)
    try:
        data_stage(config, run, console_print)
        config = resolve_defaults(config, run, console_print)
        summary = train_stage(config, run, console_print=console_print, tracker=tracker)
        pruned_at = pruning.pruned_at if pruning is not None else None
        value = None if pruned_at is not None else objective_value(config, run, metric, console_print)
        if value is not None:
            tracker.log_metrics({f"validation/{metric}": value})
        tracker.log_artifacts([run.config, run.manifest, run.root / "validation_metrics.json"])
    except Exception:
        tracker.finish("FAILED")
        raise
    except BaseException:
        tracker.finish("KILLED")
        raise
    tracker.finish("KILLED" if pruned_at is not None else "FINISHED")
    shutil.rmtree(run.checkpoints, ignore_errors=True)  # a finished trial keeps its weights, not its checkpoints
    return TrialOutcome(run, value, int(summary.get("steps") or 0), pruned_at)


def objective_value(config: RunConfig, run: RunDir, metric: str, console_print=print) -> float:
    """The metric on the run's validation split: validation loss from training, or a task metric scored now."""
    if metric == "validation_loss":
        return validation_loss_of(config, run)
    scoring = config.model_copy(deep=True)
    scoring.evaluate.baseline = False  # the untuned model's score is the same in every trial
    scoring.evaluate.intervals = False
    scoring.data.format = "auto"  # the split holds canonical rows (chat, text + label, tokens + tags)
    results = evaluate_stage(scoring, run, data_file=str(run.split("validation")), console_print=console_print)
    for name in ("metrics.json", "samples.jsonl"):  # metrics.json is the test score's place, written at the end
        if (run.root / name).is_file():
            (run.root / name).replace(run.root / f"validation_{name}")
    tuned = results.get("tuned", {})
    if metric not in tuned:
        raise TuneloopError(
            f"search.objective.metric: {metric!r} is not among this run's validation metrics "
            f"({', '.join(sorted(tuned)) or 'none'}); pick one of them (or validation_loss)."
        )
    return float(tuned[metric])


def validation_loss_of(config: RunConfig, run: RunDir) -> float:
    """The best evaluation's loss when early stopping keeps the best weights; else the last evaluation's."""
    summary = read_json(run.root / "train_summary.json")
    if config.train.early_stopping_patience is not None and summary.get("best_validation_loss") is not None:
        return float(summary["best_validation_loss"])
    records = read_jsonl(run.train_log) if run.train_log.is_file() else []
    losses = [r["eval_loss"] for r in records if r.get("eval_loss") is not None]
    if not losses:
        raise TuneloopError(
            f"{run.root}: training ran {summary.get('steps')} step(s) and never evaluated, so there is no validation "
            f"loss to judge the trial by; lower train.eval_every (now {config.train.eval_every})."
        )
    return float(losses[-1])


def record_trial(run_dir: Path, number: int, values: dict, state: str, value: float | None = None,
                 **extra) -> None:
    """trial.json in the trial's run directory: what the study decided about this run."""
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / "trial.json", {"number": number, "state": state, "value": value, "params": values} | extra)
