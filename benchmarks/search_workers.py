"""Two workers on one study in a real PostgreSQL server on this machine; `kill -9` of one mid-trial.

Starts a throwaway PostgreSQL cluster (tests/postgres_server.py), then two `tuneloop tune --worker` processes on
the Banking77 study (benchmarks/search_intents.yaml, its own output_dir), each with one thread of the 2-core
CPU. Once a trial has trained a few steps, its worker gets SIGKILL. The other worker finishes its trials, finds
the dead worker's trial stale (no heartbeat for 2 x search.heartbeat seconds), retries it, and completes the
study. Prints every trial (number, state, worker, retry of, objective) and checks that trial numbers and run
directories are unique, that the killed trial is failed and retried with the same values, and that the study
reached its number of trials.

    python benchmarks/search_workers.py [--trials 6] [--heartbeat 10] [--set train.max_steps=50 ...]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the PostgreSQL helper the tests use

import optuna  # noqa: E402
from postgres_server import start_postgres  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="benchmarks/search_intents.yaml")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--heartbeat", type=int, default=10)
    parser.add_argument("--output-dir", default="runs/search-banking77-workers")
    parser.add_argument("--set", action="append", default=[], dest="overrides",
                        help="A config override for the workers, e.g. --set train.max_steps=50 (repeatable).")
    args = parser.parse_args()

    server = start_postgres()
    try:
        url = server.create_database("tuneloop_search")
        print(f"PostgreSQL on 127.0.0.1:{server.port}; storage {url}", flush=True)
        command = [sys.executable, "-m", "tuneloop.cli", "tune", args.config, "--worker", "--storage", url,
                   "--study", "workers", "--trials", str(args.trials), "--set", f"output_dir={args.output_dir}",
                   "--set", f"search.heartbeat={args.heartbeat}"]
        for item in args.overrides:
            command += ["--set", item]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two workers, two cores
        Path(args.output_dir).mkdir(parents=True, exist_ok=True)
        logs = [open(Path(args.output_dir) / f"worker-{i}.log", "w") for i in range(2)]  # noqa: SIM115
        started = time.perf_counter()
        workers = [subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT) for log in logs]
        by_pid = {w.pid: i for i, w in enumerate(workers)}
        storage = optuna.storages.RDBStorage(url)
        study = None
        while study is None:
            try:
                study = optuna.load_study(study_name="workers", storage=storage)
            except KeyError:
                time.sleep(1)
        victim = None
        while victim is None:
            for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
                log = Path(trial.user_attrs.get("run_dir", "/nonexistent")) / "train_log.jsonl"
                if log.is_file() and len(log.read_text().splitlines()) >= 2:  # a few logged steps: mid-training
                    victim = trial
                    break
            time.sleep(0.5)
        index = by_pid[int(victim.user_attrs["worker"].rsplit(":", 1)[1])]
        os.kill(workers[index].pid, signal.SIGKILL)
        killed_at = time.perf_counter() - started
        print(f"{killed_at:.0f} s: kill -9 worker {index} (pid {workers[index].pid}) during trial {victim.number}",
              flush=True)
        survivor = workers[1 - index]
        code = survivor.wait()
        wall = time.perf_counter() - started
        for log in logs:
            log.close()
        trials = study.get_trials()
        rows = [{"number": t.number, "state": t.state.name, "worker": t.user_attrs.get("worker"),
                 "retry_of": t.system_attrs.get("failed_trial"), "value": t.value, "steps": t.user_attrs.get("steps"),
                 "params": t.params} for t in trials]
        for row in rows:
            print(json.dumps(row), flush=True)
        numbers = [t.number for t in trials]
        finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
        retried = [t for t in finished if t.system_attrs.get("failed_trial") == victim.number]
        checks = {
            "survivor_exit_code": code,
            "killed_exit_code": workers[index].wait(),
            "unique_trial_numbers": len(set(numbers)) == len(numbers),
            "unique_run_dirs": len({t.user_attrs.get("run_dir") for t in trials}) == len(trials),
            "killed_trial_state": next(t.state.name for t in trials if t.number == victim.number),
            "killed_trial_retried_as": [t.number for t in retried],
            "retry_has_same_values": bool(retried) and retried[0].params == victim.params,
            "finished_trials": len(finished), "target": args.trials, "wall_seconds": round(wall, 1),
            "killed_after_seconds": round(killed_at, 1),
        }
        print(json.dumps(checks, indent=2), flush=True)
        (Path(args.output_dir) / "workers-summary.json").write_text(json.dumps({"trials": rows, "checks": checks},
                                                                               indent=2))
        ok = (code == 0 and checks["unique_trial_numbers"] and checks["killed_trial_state"] == "FAIL"
              and checks["retry_has_same_values"] and len(finished) >= args.trials)
        sys.exit(0 if ok else 1)
    finally:
        server.stop()


if __name__ == "__main__":
    main()
