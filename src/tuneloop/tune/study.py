"""The study and its workers: open or continue an Optuna study on its storage, and run trials until it has its
number of finished trials (`run_trials`, the loop every worker runs). tuneloop.tune.finish then picks the winner.

Storage is a SQLite file in the study directory unless --storage names another database (PostgreSQL lets
workers on several hosts join). Every worker sends heartbeats; a trial whose worker died (kill -9, a lost
host) is failed once its heartbeat is stale and queued again (Optuna's RetryHeartbeatStaleTrialCallback),
and a trial stopped by Ctrl-C is queued again at once, so the same command continues the study: finished
trials are kept with their numbers, the interrupted one runs again under a new number.

The study directory (the base config's output_dir):
    study.db            the Optuna storage (default)
    trials/NNNN/        one ordinary run directory per trial (trial.json says pruned / complete / failed)
    cv/                 with search.cv_folds: the pool's data run and fold-i/{train,validation}.jsonl
    default/, best/, best.yaml, results.json, study.html    written at the end (tuneloop.tune.finish)
    workers/            with --workers K: each worker's log (tuneloop.tune.command)
"""

from __future__ import annotations

import os
import socket
import statistics
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tuneloop.config.schema import RunConfig
from tuneloop.config.search_space import Param, parse_space, with_values
from tuneloop.errors import ConfigError, TrainingInterrupted, TuneloopError
from tuneloop.stages import data_stage, open_for_run
from tuneloop.tune.objective import base_raw, record_trial, run_trial_config, trial_config
from tuneloop.tune.space import describe_values, grid_points, grid_size, suggest
from tuneloop.workspace import flatten, read_jsonl, write_json

FAILURES_IN_A_ROW = 3  # then a worker stops: something is wrong with every trial, not with one


class StudyInterrupted(TuneloopError):
    exit_code = 130


@dataclass
class StudyPlan:
    """Everything a worker needs to know about the study, derived from the config and the command line."""

    config: RunConfig
    root: Path
    name: str
    storage_url: str
    params: list[Param]
    # The values of the search's own baseline trial (--auto's trial 0, the defaults table's values): the finish
    # scores that trial as "the default" instead of training the base config once more.
    default_values: dict[str, Any] | None = None

    @property
    def search(self):
        return self.config.search

    @property
    def metric(self) -> str:
        return self.config.search.objective.metric

    @property
    def direction(self) -> str:
        return self.config.search.objective.resolved_direction

    @property
    def base(self) -> dict[str, Any]:
        return base_raw(self.config)

    @property
    def tracking(self) -> dict[str, str]:
        """Where the study's runs are tracked: the store a plain run of the base config would use (MLflow:
        sqlite beside the output_dir), in an experiment of their own named after the study."""
        tracking = self.config.tracking
        uri = tracking.uri or f"sqlite:///{self.root.resolve().parent / 'mlflow.db'}"
        return {"experiment": f"{tracking.experiment}-{self.name}", "uri": uri}

    def target(self, trials: int | None = None) -> int:
        wanted = trials or self.search.trials
        return min(wanted, grid_size(self.params)) if self.search.sampler == "grid" else wanted


def plan_study(config: RunConfig, storage: str | None = None, study_name: str | None = None) -> StudyPlan:
    if config.search is None:
        raise ConfigError("search: this config has no search block; add one (see docs/search.md) to use "
                          "`tuneloop tune`, or train it as written with `tuneloop run`.")
    root = Path(config.output_dir)
    params, _ = parse_space(config.search.space)  # already checked by validate_config
    url = storage or f"sqlite:///{root.resolve() / 'study.db'}"
    return StudyPlan(config, root, study_name or root.resolve().name, url, params)


def open_storage(url: str, heartbeat: int):
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        engine = {"connect_args": {"timeout": 60}}  # local workers share one file: wait for its lock
    else:
        engine = {"pool_pre_ping": True}
    try:
        return RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=heartbeat, grace_period=2 * heartbeat,
            heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(max_retry=3),
        )
    except Exception as exc:  # SQLAlchemy: bad URL, server down, no driver
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise TuneloopError(f"--storage {redact(url)}: cannot open the study storage ({first}). Give a SQLAlchemy "
                            "URL such as sqlite:///study.db or postgresql+psycopg://user@host:5432/db.") from None


def redact(url: str) -> str:
    """The URL without its password, for messages and reports."""
    head, sep, tail = url.partition("@")
    if not sep or "://" not in head:
        return url
    scheme, _, credentials = head.partition("://")
    return f"{scheme}://{credentials.split(':')[0]}@{tail}"


def make_sampler(plan: StudyPlan, seed: int | None, target: int):
    import optuna

    kind = plan.search.sampler
    if kind == "tpe":
        # A fifth of a short study samples at random before TPE models it (Optuna's default is 10 of any size);
        # constant_liar keeps parallel workers from proposing the same point.
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(10, max(3, target // 4)), constant_liar=True)
    if kind == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if kind == "grid":
        return optuna.samplers.GridSampler(grid_points(plan.params), seed=seed)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    try:
        import cmaes  # noqa: F401
    except ImportError:
        raise ConfigError("search.sampler: cmaes needs the cmaes package: `pip install cmaes`, or pick tpe.") from None
    return optuna.samplers.CmaEsSampler(seed=seed)


def make_pruner(plan: StudyPlan):
    import optuna

    if plan.search.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=plan.search.pruner_startup_trials,
                                           n_warmup_steps=plan.search.pruner_warmup_steps)
    if plan.search.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
    return optuna.pruners.NopPruner()


def fingerprint(plan: StudyPlan) -> dict[str, Any]:
    """What must not change between the workers and sessions of one study: the base config and the search."""
    base = {k: v for k, v in flatten(plan.base).items() if k != "output_dir" and not k.startswith("tracking.")}
    search = plan.search
    return base | {"search.objective": f"{plan.metric} {plan.direction}", "search.sampler": search.sampler,
                   "search.cv_folds": search.cv_folds, "search.space": repr(sorted(flatten_params(plan.params)))}


def flatten_params(params: list[Param]) -> list[str]:
    return [f"{p.key}: {p.describe()}" for p in params]


def open_study(plan: StudyPlan, seed: int | None = None, target: int | None = None):
    """The study on its storage, created on first use; refuses to continue a study started with another config."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # tuneloop prints one line per trial itself
    storage = open_storage(plan.storage_url, plan.search.heartbeat)
    study = optuna.create_study(
        storage=storage, study_name=plan.name, direction=plan.direction, load_if_exists=True,
        sampler=make_sampler(plan, seed, target or plan.target()), pruner=make_pruner(plan),
    )
    current = fingerprint(plan)
    saved = study.user_attrs.get("fingerprint")
    if saved is None:
        study.set_user_attr("fingerprint", current)
        study.set_user_attr("metric", plan.metric)
    elif saved != current:
        changed = sorted(k for k in saved.keys() | current.keys() if saved.get(k) != current.get(k))
        raise ConfigError(
            f"--study {plan.name}: this study (in {redact(plan.storage_url)}) was started with another config; it "
            f"differs at {', '.join(changed[:8])}. Continue it with the same config, or start a new study with "
            "--study OTHER_NAME (or another output_dir)."
        )
    if study.direction.name.lower() != plan.direction:
        raise ConfigError(f"--study {plan.name}: the stored study {study.direction.name.lower()}s, the config "
                          f"{plan.direction}s; use another --study name.")
    return study


def state_counts(study) -> Counter:
    return Counter(t.state.name for t in study.get_trials(deepcopy=False))


def run_trials(plan: StudyPlan, trials: int | None = None, timeout: float | None = None, seeded: bool = True,
               console_print=print) -> Counter:
    """The worker loop: run trials until the study has `trials` finished (complete or pruned) and nothing queued.

    While the remaining trials run in other workers this one waits, so it can retry any whose worker dies.
    """
    import optuna

    target = plan.target(trials)
    timeout = timeout or plan.search.timeout
    seed = None
    if seeded:  # a continued study must not replay the proposals its first session already made
        seed = plan.config.seed + len(open_study(plan, None, target).get_trials(deepcopy=False))
    study = open_study(plan, seed, target)
    folds = cv_folds(plan) if plan.search.cv_folds else None
    ran: dict[str, Any] = {}
    objective = make_objective(plan, study, folds, ran, console_print)
    started, failures, said_waiting = time.monotonic(), 0, False
    while True:
        if timeout and time.monotonic() - started > timeout:
            console_print(f"tune: timeout ({timeout:g} s) reached; no new trial starts")
            break
        optuna.storages.fail_stale_trials(study)  # a dead worker's trial: failed, and queued again
        states = state_counts(study)
        finished = states["COMPLETE"] + states["PRUNED"]
        if not states["WAITING"] and finished >= target:
            break
        if not states["WAITING"] and finished + states["RUNNING"] >= target:
            if not said_waiting:
                console_print(f"tune: {finished}/{target} finished; waiting for {states['RUNNING']} trial(s) running "
                              "elsewhere (a dead worker's trial is retried here)")
                said_waiting = True
            time.sleep(min(2.0, plan.search.heartbeat / 2))
            continue
        said_waiting = False
        ran.clear()
        try:
            study.optimize(objective, n_trials=1, catch=(Exception,))
        except KeyboardInterrupt:
            ran["interrupted"] = True
        if ran.get("interrupted"):
            raise StudyInterrupted(
                f"interrupted during trial {ran.get('number')}; it is queued to run again. Run the same command to "
                f"continue the study ({finished} finished trial(s) kept)."
            )
        failures = failures + 1 if ran.get("error") else 0
        if failures >= FAILURES_IN_A_ROW:
            raise TuneloopError(f"{failures} trials in a row failed; the last (trial {ran.get('number')}): "
                                f"{ran['error']}")
    return state_counts(study)


def make_objective(plan: StudyPlan, study, folds: list[tuple[Path, Path]] | None, ran: dict, console_print):
    """The function Optuna calls with each trial: suggest values, run the trial's run(s), return the objective."""
    import optuna

    def objective(trial) -> float:
        number = trial.number
        run_dir = plan.root / "trials" / f"{number:04d}"
        ran["number"] = number
        values = suggest(trial, plan.params)
        trial.set_user_attr("run_dir", str(run_dir))
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        console_print(f"trial {number}: {describe_values(values)}")
        try:
            if folds:
                value, steps, pruned_at = cross_validate(plan, trial, values, run_dir, folds, console_print)
            else:
                from tuneloop.tune.pruning import PruningCallback

                pruning = PruningCallback(trial, plan.direction) if plan.search.pruner != "none" else None
                outcome = run_trial_config(trial_config(plan.base, values, run_dir, plan.tracking), plan.metric,
                                           pruning, console_print)
                value, steps, pruned_at = outcome.value, outcome.steps, outcome.pruned_at
        except (TrainingInterrupted, KeyboardInterrupt):
            ran["interrupted"] = True
            record_trial(run_dir, number, values, "interrupted")
            requeue(study, number)
            raise
        except Exception as exc:
            ran["error"] = str(exc)
            trial.set_user_attr("error", str(exc)[:2000])
            record_trial(run_dir, number, values, "failed", error=str(exc))
            console_print(f"trial {number}: failed: {exc}")
            raise
        trial.set_user_attr("steps", steps)
        if pruned_at is not None:
            trial.set_user_attr("pruned_at", pruned_at)
            record_trial(run_dir, number, values, "pruned", steps=steps, pruned_at=pruned_at)
            console_print(f"trial {number}: pruned at {'fold' if folds else 'step'} {pruned_at} ({steps} steps)")
            raise optuna.TrialPruned(f"pruned at {pruned_at}")
        record_trial(run_dir, number, values, "complete", value, steps=steps)
        console_print(f"trial {number}: {plan.metric} {value:.4f} ({steps} steps)")
        return value

    return objective


def requeue(study, number: int) -> None:
    """Queue a stopped trial's values again, as the heartbeat does for a dead worker's trial."""
    from optuna.storages import RetryHeartbeatStaleTrialCallback

    frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == number)
    RetryHeartbeatStaleTrialCallback()(study, frozen)


def cv_folds(plan: StudyPlan, console_print=print) -> list[tuple[Path, Path]]:
    """The folds' files, prepared once per study directory: the base config's data stage (no test file), then
    its train and validation rows split into k folds with near-duplicate clusters kept together."""
    from tuneloop.tune.cv import write_folds

    root = plan.root / "cv"
    k = plan.search.cv_folds
    paths = [(root / f"fold-{i}" / "train.jsonl", root / f"fold-{i}" / "validation.jsonl") for i in range(k)]
    if (root / "folds.json").is_file() and all(a.is_file() and b.is_file() for a, b in paths):
        return paths
    pool_config = trial_config(plan.base, {}, root / "pool")
    pool_config.tracking.backend = "none"
    run = open_for_run(pool_config, overwrite=True)
    data_stage(pool_config, run, console_print)
    rows = read_jsonl(run.split("train")) + read_jsonl(run.split("validation"))
    written = write_folds(rows, k, plan.config.seed, root, plan.config.data.audit.near_threshold)
    sizes = [len(read_jsonl(validation)) for _, validation in written]
    write_json(root / "folds.json", {"k": k, "rows": len(rows), "validation_rows_per_fold": sizes,
                                     "seed": plan.config.seed, "near_threshold": plan.config.data.audit.near_threshold})
    console_print(f"tune: {k} folds of {len(rows)} rows ({', '.join(map(str, sizes))} held out each), near-duplicate "
                  "clusters kept within one fold")
    return written


def cross_validate(plan: StudyPlan, trial, values: dict, run_dir: Path, folds: list[tuple[Path, Path]],
                   console_print) -> tuple[float | None, int, int | None]:
    """Train the trial's config on each fold; the objective is the fold mean. The pruner sees the running mean
    after each fold, so a bad trial stops after one or two folds."""
    fold_values: list[float] = []
    steps = 0
    for index, (train_path, validation_path) in enumerate(folds):
        raw = with_values(plan.base, values)
        raw["data"].update(train_file=str(train_path), validation_file=str(validation_path), format="auto",
                           test_size=None, max_train_examples=None, max_validation_examples=None)
        raw["data"].setdefault("audit", {})["enabled"] = False  # the pool was audited once, in cv/pool
        outcome = run_trial_config(trial_config(raw, {}, run_dir / f"fold-{index}", plan.tracking), plan.metric,
                                   None, console_print)
        fold_values.append(outcome.value)
        steps += outcome.steps
        trial.set_user_attr("fold_values", fold_values)
        running = statistics.fmean(fold_values)
        if plan.search.pruner != "none" and index < len(folds) - 1:
            trial.report(running, index)
            if trial.should_prune():
                return None, steps, index
    spread = statistics.stdev(fold_values) if len(fold_values) > 1 else 0.0
    trial.set_user_attr("fold_std", spread)
    console_print(f"trial {trial.number}: folds {', '.join(f'{v:.4f}' for v in fold_values)}; mean "
                  f"{statistics.fmean(fold_values):.4f} +- {spread:.4f}")
    return statistics.fmean(fold_values), steps, None
