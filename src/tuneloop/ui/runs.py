"""What the UI shows of a workspace's run directories: one summary row per run, and its curves from train_log.jsonl.

Everything here is read from the run directory (config.yaml, metrics.json, train_summary.json, train_log.jsonl),
so a past run shows the same table row and the same curves as it did live.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tuneloop.errors import TuneloopError
from tuneloop.ui.jobs import Job, latest_job
from tuneloop.workspace import RunDir, read_json

# The metric the runs table leads with: the first of these the run has (right/wrong, overlap, then loss).
HEADLINE_METRICS = ("exact_match", "accuracy", "f1_macro", "entity_f1", "contains_answer", "token_f1", "rouge_l",
                    "reward", "preference_accuracy", "validation_loss")
ACTIVE_SECONDS = 60  # a run not started here counts as running while its train_log.jsonl changed this recently
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,80}$")


@dataclass
class RunSummary:
    name: str
    path: Path
    status: str
    recipe: str
    model: str
    metric: str | None
    baseline: float | None
    tuned: float | None
    interval: list[float] | None
    forgetting: str
    seconds: float | None
    job: Job | None
    failure: str | None


def find_runs(workspace: Path) -> list[Path]:
    """Run directories directly under the workspace (those with a config.yaml), newest first."""
    if not workspace.is_dir():
        return []
    runs = [p for p in workspace.iterdir()
            if p.is_dir() and (p / "config.yaml").is_file() and not p.name.startswith(".")]
    return sorted(runs, key=lambda p: (p / "config.yaml").stat().st_mtime, reverse=True)


def run_path(workspace: Path, name: str) -> Path:
    """The run directory called name in the workspace, or a clear error (names never leave the workspace).
    A run the UI just started counts before `tuneloop run` has written its config.yaml."""
    if not RUN_NAME.match(name) or not ((workspace / name / "config.yaml").is_file()
                                        or latest_job(workspace, workspace / name) is not None):
        raise TuneloopError(f"no run called {name!r} in {workspace}; pick one from the Runs page.")
    return workspace / name


def _raw_config(path: Path) -> dict:
    try:
        return yaml.safe_load((path / "config.yaml").read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _model_name(raw: dict) -> str:
    name = str((raw.get("model") or {}).get("name", "?"))
    return Path(name).name if "/" in name and Path(name).exists() else name


def headline(metrics: dict) -> tuple[str | None, float | None, float | None, list[float] | None]:
    tuned = metrics.get("tuned", {})
    metric = next((m for m in HEADLINE_METRICS if isinstance(tuned.get(m), int | float)), None)
    if metric is None:
        return None, None, None, None
    interval = metrics.get("intervals", {}).get("tuned", {}).get(metric)
    return metric, metrics.get("baseline", {}).get(metric), tuned[metric], interval


def forgetting_verdict(metrics: dict) -> str:
    """'not checked', 'kept (-0.4 points)', or 'FORGOT (...)' when the run's forgetting check failed."""
    found = metrics.get("forgetting") or {}
    failed = [f for f in metrics.get("failures", []) if "forget" in str(f).lower()]
    if not found:
        return "FORGOT" if failed else "not checked"
    worst = min(float(item.get("change", 0.0)) for item in found.values())
    return f"{'FORGOT' if failed else 'kept'} ({worst:+.1f} points)"


def summarize(workspace: Path, path: Path) -> RunSummary:
    run = RunDir(path)
    raw = _raw_config(path)
    train = raw.get("train") or {}
    recipe = str(train.get("method", "?"))
    if train.get("recipe") not in (None, "auto"):
        recipe = f"{train['recipe']} ({recipe})"
    metrics = read_json(run.metrics) if run.metrics.is_file() else {}
    summary = read_json(path / "train_summary.json") if (path / "train_summary.json").is_file() else {}
    job = latest_job(workspace, path)
    if job is not None and job.running:
        status = "running"
    elif metrics:
        status = "finished" if metrics.get("status", "passed") == "passed" else "failed checks"
    elif job is None and run.train_log.is_file() and time.time() - run.train_log.stat().st_mtime < ACTIVE_SECONDS:
        status = "running"  # started from the command line: its log is still growing
    elif job is not None and job.state in ("failed", "stopped", "interrupted"):
        status = job.state
    elif summary:
        status = "trained, not evaluated"
    else:
        status = "incomplete"
    metric, baseline, tuned, interval = headline(metrics)
    seconds = summary.get("seconds")
    if status == "running" and job is not None:  # so far, counted from the job's start
        seconds = time.time() - (job.root / "job.json").stat().st_mtime
    return RunSummary(path.name, path, status, recipe, _model_name(raw), metric, baseline, tuned, interval,
                      forgetting_verdict(metrics) if metrics else "-", seconds, job,
                      job.failure() if job is not None and not job.running and not metrics else None)


def read_curves(path: Path) -> dict:
    """Train and validation loss by step, tokens/s and the last step, from train_log.jsonl (a resume's later
    records for the same step replace the earlier ones)."""
    train: dict[int, float] = {}
    validation: dict[int, float] = {}
    tokens_per_second = None
    last_step = 0
    log = path / "train_log.jsonl"
    if log.is_file():
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line being written right now
            step = int(record.get("step", 0))
            last_step = max(last_step, step)
            if isinstance(record.get("loss"), int | float):
                train[step] = float(record["loss"])
            if isinstance(record.get("eval_loss"), int | float):
                validation[step] = float(record["eval_loss"])
            if isinstance(record.get("train_tokens_per_second"), int | float) and "loss" in record:
                tokens_per_second = float(record["train_tokens_per_second"])
    return {"train": sorted(train.items()), "validation": sorted(validation.items()),
            "tokens_per_second": tokens_per_second, "step": last_step}


def read_samples(path: Path, limit: int = 8) -> list[dict]:
    """The first held-out samples: prompt, reference, baseline and tuned answers (samples.jsonl)."""
    samples = path / "samples.jsonl"
    if not samples.is_file():
        return []
    rows = []
    with samples.open(encoding="utf-8") as handle:
        for line in handle:
            if len(rows) >= limit:
                break
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows
