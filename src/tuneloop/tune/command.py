"""`tuneloop tune`: run a study in this process or in K worker processes, then finish it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from tuneloop.config.schema import RunConfig
from tuneloop.tune.finish import finish_study
from tuneloop.tune.study import (
    StudyInterrupted,
    StudyPlan,
    cv_folds,
    open_study,
    plan_study,
    redact,
    run_trials,
    state_counts,
)


def spawn_workers(plan: StudyPlan, count: int, config_path: Path, overrides: list[str], trials: int | None,
                  timeout: float | None, console_print) -> list[int]:
    """K worker processes on this host (`tuneloop tune --worker`), one GPU each when there are GPUs; their
    output goes to workers/worker-i.log. Returns their exit codes."""
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    logs = plan.root / "workers"
    logs.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "tuneloop.cli", "tune", str(config_path), "--worker",
               "--storage", plan.storage_url, "--study", plan.name]
    for item in overrides:
        command += ["--set", item]
    if trials:
        command += ["--trials", str(trials)]
    if timeout:
        command += ["--timeout", str(timeout)]
    processes = []
    for index in range(count):
        env = dict(os.environ)
        if gpus and "CUDA_VISIBLE_DEVICES" not in os.environ:
            env["CUDA_VISIBLE_DEVICES"] = str(index % gpus)  # one trial per device
        elif not gpus and "OMP_NUM_THREADS" not in os.environ:
            # K workers each running a thread per core would oversubscribe the CPU: give each its share of the cores.
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // count))
        log = (logs / f"worker-{index}.log").open("w", encoding="utf-8")
        processes.append((subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env), log))
    console_print(f"tune: {count} workers started (logs in {logs})" + (f", on {gpus} GPU(s)" if gpus else ""))
    target = plan.target(trials)
    study = open_study(plan)
    try:
        while any(p.poll() is None for p, _ in processes):
            time.sleep(5)
            states = state_counts(study)
            console_print(f"tune: {states['COMPLETE'] + states['PRUNED']}/{target} finished "
                          f"({states['PRUNED']} pruned, {states['FAIL']} failed, {states['RUNNING']} running)")
    except KeyboardInterrupt:
        for process, _ in processes:
            if process.poll() is None:
                process.send_signal(2)  # SIGINT: each worker saves its trial's place and queues it again
        for process, _ in processes:
            process.wait()
        raise StudyInterrupted("interrupted; the running trials are queued again. Run the same command to "
                               "continue the study.") from None
    finally:
        for _, log in processes:
            log.close()
    return [process.returncode for process, _ in processes]


def tune(config: RunConfig, *, config_path: Path, overrides: list[str] | None = None, trials: int | None = None,
         timeout: float | None = None, storage: str | None = None, study_name: str | None = None, workers: int = 1,
         worker_only: bool = False, console_print=print) -> dict | None:
    """`tuneloop tune`: run the study (in this process or K workers), then finish it (unless --worker)."""
    plan = plan_study(config, storage, study_name)
    if worker_only:
        run_trials(plan, trials, timeout, seeded=False, console_print=console_print)
        return None
    open_study(plan, target=plan.target(trials))  # create it (and check it) before any worker joins
    if plan.search.cv_folds:
        cv_folds(plan, console_print)  # prepared once, before workers read the folds
    console_print(f"tune: study {plan.name} in {redact(plan.storage_url)}: {plan.target(trials)} trials, "
                  f"{plan.search.sampler} sampler, {plan.search.pruner} pruner, objective {plan.metric} "
                  f"({plan.direction}) on validation")
    if workers > 1:
        codes = spawn_workers(plan, workers, config_path, overrides or [], trials, timeout, console_print)
        lost = [f"worker {i} exited with {code}" for i, code in enumerate(codes) if code]
        if lost:
            console_print(f"tune: {'; '.join(lost)} (logs in {plan.root / 'workers'}); finishing its trials here")
        # A worker that died leaves its trial to the heartbeat: this process retries it, and anything left.
        run_trials(plan, trials, timeout, seeded=False, console_print=console_print)
    else:
        run_trials(plan, trials, timeout, seeded=True, console_print=console_print)
    return finish_study(plan, console_print, trials)
