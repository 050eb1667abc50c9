"""The Studies page's data: each search study in the workspace (a folder with study.db), its trials and best one."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tuneloop.workspace import read_json


@dataclass
class StudyView:
    name: str
    path: Path
    direction: str
    trials: list[dict]  # number, state, value, params
    best: dict | None
    report: Path | None


def find_studies(workspace: Path) -> list[Path]:
    if not workspace.is_dir():
        return []
    return sorted(p for p in workspace.iterdir() if (p / "study.db").is_file())


def read_study(path: Path) -> list[StudyView]:
    """Every Optuna study stored in path/study.db (read only; a running search keeps writing)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(path / 'study.db').resolve()}", skip_compatibility_check=True)
    views = []
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        trials = [{"number": t.number, "state": t.state.name, "value": t.value, "params": t.params}
                  for t in study.get_trials(deepcopy=False)]
        complete = [t for t in trials if t["state"] == "COMPLETE" and t["value"] is not None]
        direction = study.direction.name.lower()
        best = (min if direction == "minimize" else max)(complete, key=lambda t: t["value"]) if complete else None
        report = path / "study.html"
        views.append(StudyView(summary.study_name, path, direction, trials, best, report if report.is_file() else None))
    return views


def study_results(path: Path) -> dict | None:
    """results.json, which `tuneloop tune` writes when the study finished (winner vs default on the test set)."""
    return read_json(path / "results.json") if (path / "results.json").is_file() else None
