"""Two worker processes on a real PostgreSQL server share one study; kill -9 of one mid-trial loses only that
trial, which the other worker retries once its heartbeat is stale."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
from conftest import write_config
from study_configs import study_raw

import tuneloop
from tuneloop.config.load import validate_config
from tuneloop.tune.study import open_study, plan_study

SRC = str(Path(tuneloop.__file__).resolve().parents[1])


def test_two_workers_on_postgres_finish_the_study_after_a_kill_9(tiny_config, tmp_path, postgres_url):
    raw = study_raw(tiny_config, tmp_path)
    raw["search"].update(trials=3, heartbeat=1)  # a silent worker's trial is stale after 2 s
    raw["train"]["max_steps"] = 6  # long enough to be killed mid-training
    config_path = write_config(tmp_path / "search.yaml", raw)
    plan = plan_study(validate_config(raw), storage=postgres_url, study_name="pg")
    study = open_study(plan)
    command = [sys.executable, "-m", "tuneloop.cli", "tune", str(config_path), "--worker",
               "--storage", postgres_url, "--study", "pg"]
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    logs = [(tmp_path / f"worker-{i}.log").open("w") for i in range(2)]
    workers = [subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT) for log in logs]
    by_pid = {w.pid: w for w in workers}
    try:
        victim = None
        deadline = time.monotonic() + 120
        while victim is None and time.monotonic() < deadline:  # a trial that has started training
            for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                run_dir = Path(trial.user_attrs.get("run_dir", "/nonexistent"))
                if (run_dir / "train_log.jsonl").is_file():
                    victim = trial
                    break
            time.sleep(0.05)
        assert victim is not None, "no trial started training within 2 minutes"
        killed = by_pid[int(victim.user_attrs["worker"].rsplit(":", 1)[1])]
        os.kill(killed.pid, signal.SIGKILL)
        survivor = next(w for w in workers if w is not killed)
        assert survivor.wait(timeout=180) == 0, (tmp_path / f"worker-{workers.index(survivor)}.log").read_text()
        assert killed.wait(timeout=10) == -signal.SIGKILL
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
        for log in logs:
            log.close()

    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert numbers == sorted(set(numbers)) == list(range(len(trials)))  # no duplicate trial numbers
    assert len({t.user_attrs["run_dir"] for t in trials}) == len(trials)  # one run directory each
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3
    dead = next(t for t in trials if t.number == victim.number)
    assert dead.state.name == "FAIL"  # the heartbeat went stale: failed ...
    retry = next(t for t in complete if t.system_attrs.get("failed_trial") == victim.number)
    assert retry.params == victim.params  # ... and run again with the same values by the other worker
