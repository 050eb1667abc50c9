"""Studies on the tiny Llama: the whole `tuneloop tune` command, pruning, resume after Ctrl-C, cross-validation,
and the test set left unread until the winner is chosen."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import write_config
from study_configs import study_raw
from typer.testing import CliRunner

from tuneloop.cli import app
from tuneloop.config.load import validate_config
from tuneloop.errors import TuneloopError
from tuneloop.tune import command as command_module
from tuneloop.tune.cv import cluster_folds
from tuneloop.tune.study import StudyInterrupted, open_study, plan_study, run_trials
from tuneloop.workspace import read_json

runner = CliRunner()
# Every file opened in this process while `_OPENED` is a list; an audit hook cannot be removed, so it is gated.
_OPENED: list | None = None


def _record_opens(event, args):
    if event == "open" and _OPENED is not None and isinstance(args[0], str | bytes | os.PathLike):
        _OPENED.append(os.fsdecode(args[0]))


sys.addaudithook(_record_opens)


def test_tune_command_scores_the_test_set_only_after_the_search(tiny_config, tmp_path, monkeypatch):
    tune_raw = study_raw(tiny_config, tmp_path)
    global _OPENED
    test_file = str(Path(tune_raw["data"]["test_file"]).resolve())
    phases = {"search": [], "finish": []}
    finish = command_module.finish_study

    def finish_watched(*args, **kwargs):  # everything before this call is the search itself
        global _OPENED
        _OPENED = phases["finish"]
        return finish(*args, **kwargs)

    monkeypatch.setattr(command_module, "finish_study", finish_watched)
    config_path = write_config(tmp_path / "search.yaml", tune_raw)
    _OPENED = phases["search"]
    try:
        result = runner.invoke(app, ["tune", str(config_path), "--trials", "2"])
    finally:
        _OPENED = None
    assert result.exit_code == 0, result.output + str(result.exception)
    opened_during_search = [p for p in phases["search"] if str(Path(p).resolve()) == test_file]
    opened_at_the_end = [p for p in phases["finish"] if str(Path(p).resolve()) == test_file]
    assert phases["search"] and not opened_during_search  # trials read files, never the test file
    assert opened_at_the_end  # the spy sees the test file when it is finally scored

    root = Path(tune_raw["output_dir"])
    results = read_json(root / "results.json")
    assert results["trials"] == {"COMPLETE": 2}
    best = results["best"]
    assert best["test"]["rows"] == 6 and results["default"]["test"]["rows"] == 6
    for number in (0, 1):
        trial_dir = root / "trials" / f"{number:04d}"
        assert read_json(trial_dir / "trial.json")["state"] == "complete"
        assert yaml.safe_load((trial_dir / "config.yaml").read_text())["data"]["test_file"] is None
        assert not (trial_dir / "checkpoints").exists()
    # best.yaml: a plain config (no search block) with the winner's values and the test file back in place.
    reproduced = yaml.safe_load((root / "best.yaml").read_text())
    assert "search" not in reproduced
    assert reproduced["train"]["learning_rate"] == best["params"]["train.learning_rate"]
    assert reproduced["data"]["test_file"] == tune_raw["data"]["test_file"]
    validate_config(reproduced)
    page = (root / "study.html").read_text()
    for needle in ("Optimization history", "data:image/png;base64", "default config (as written)", "complete",
                   "optuna-dashboard"):
        assert needle in page
    assert "winner: trial" in result.output

    # The same command again: the study is finished, and the test set is not scored a second time.
    again = runner.invoke(app, ["tune", str(config_path), "--trials", "2"])
    assert again.exit_code == 0, again.output
    assert "already scored on the test set" in again.output
    assert read_json(root / "results.json")["trials"] == {"COMPLETE": 2}


def test_median_pruner_stops_a_trial_with_an_absurd_learning_rate(tiny_config, tmp_path):
    tune_raw = study_raw(tiny_config, tmp_path)
    tune_raw["search"].update(pruner="median", pruner_startup_trials=1,
                              space={"train.learning_rate": {"log_uniform": [1.0e-4, 0.9]}})
    plan = plan_study(validate_config(tune_raw))
    study = open_study(plan)
    study.enqueue_trial({"train.learning_rate": 1.0e-3})  # a sensible first trial, then an absurd one
    study.enqueue_trial({"train.learning_rate": 0.9})
    run_trials(plan, trials=2, console_print=lambda *_: None)

    good, bad = study.get_trials()
    assert good.state == optuna.trial.TrialState.COMPLETE
    assert bad.state == optuna.trial.TrialState.PRUNED
    recorded = read_json(plan.root / "trials" / "0001" / "trial.json")
    assert recorded["state"] == "pruned" and recorded["steps"] < 3  # stopped before max_steps
    assert bad.user_attrs["pruned_at"] == recorded["pruned_at"] == recorded["steps"]
    # The pruned run's directory is still a complete run: its log shows the evaluations the pruner judged.
    assert (plan.root / "trials" / "0001" / "train_summary.json").is_file()


def test_ctrl_c_mid_study_and_the_same_call_continues_it(tiny_config, tmp_path):
    tune_raw = study_raw(tiny_config, tmp_path)
    tune_raw["search"].update(sampler="grid", space={"train.learning_rate": {"choice": [1.0e-4, 1.0e-2]}})
    plan = plan_study(validate_config(tune_raw))
    second_log = plan.root / "trials" / "0001" / "train_log.jsonl"

    def press_ctrl_c_during_trial_1():
        deadline = time.monotonic() + 120
        while not second_log.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=press_ctrl_c_during_trial_1, daemon=True).start()
    with pytest.raises(StudyInterrupted, match="interrupted during trial 1; it is queued to run again"):
        run_trials(plan, console_print=lambda *_: None)
    study = open_study(plan)
    first = study.get_trials()
    assert [t.state.name for t in first] == ["COMPLETE", "FAIL", "WAITING"]  # the interrupted one, queued again
    assert read_json(plan.root / "trials" / "0001" / "trial.json")["state"] == "interrupted"

    run_trials(plan, console_print=lambda *_: None)  # the same call again
    trials = study.get_trials()
    assert [t.number for t in trials] == [0, 1, 2]  # numbers kept, none reused
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[0].datetime_complete == first[0].datetime_complete  # the finished trial was not rerun
    assert trials[2].params == trials[1].params and trials[2].system_attrs["failed_trial"] == 1
    grid = sorted(t.params["train.learning_rate"] for t in trials if t.state.name == "COMPLETE")
    assert grid == [1.0e-4, 1.0e-2]  # every grid point exactly once


def test_a_study_refuses_to_continue_with_another_config(tiny_config, tmp_path):
    tune_raw = study_raw(tiny_config, tmp_path)
    plan = plan_study(validate_config(tune_raw))
    open_study(plan)
    tune_raw["train"]["batch_size"] = 2
    with pytest.raises(TuneloopError, match="was started with another config; it differs at train.batch_size"):
        open_study(plan_study(validate_config(tune_raw)))


def test_folds_keep_near_duplicate_clusters_together():
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    texts = []
    for group in range(12):  # 12 clusters of 3 near-identical rows each
        base = " ".join(words[(group + i) % len(words)] + str(group) for i in range(10))
        texts += [base, base + " extra", base.upper()]
    folds = cluster_folds(texts, 4, seed=0)
    assert sorted(i for fold in folds for i in fold) == list(range(len(texts)))
    for fold in folds:
        assert len(fold) == 9  # 3 clusters each
        assert {i // 3 for i in fold} == {i // 3 for i in fold if i % 3 == 0}  # whole clusters only


def test_cross_validation_reports_fold_mean_and_spread(tiny_config, tmp_path):
    tune_raw = study_raw(tiny_config, tmp_path)
    tune_raw["search"].update(cv_folds=2, trials=1)
    plan = plan_study(validate_config(tune_raw))
    run_trials(plan, console_print=lambda *_: None)
    (trial,) = open_study(plan).get_trials()
    folds = trial.user_attrs["fold_values"]
    assert trial.state.name == "COMPLETE" and len(folds) == 2
    assert trial.value == pytest.approx(sum(folds) / 2)
    assert trial.user_attrs["fold_std"] == pytest.approx(abs(folds[0] - folds[1]) / 2 ** 0.5)
    split = read_json(plan.root / "cv" / "folds.json")
    assert split["k"] == 2 and sum(split["validation_rows_per_fold"]) == split["rows"]
    assert (plan.root / "trials" / "0000" / "fold-1" / "train_summary.json").is_file()
