"""`tuneloop run CONFIG --auto 30m`: a search sized to a time budget, seeded with the defaults table, then the
winner scored once on the test set.

1. Plan: the data stage and the defaults table run once in <output_dir>/plan (a run directory without the
   test file), which gives the recipe, the row count and the table's values. The search covers the few keys
   that matter for the recipe (AUTO_KEYS), each only if the config left it out: a value the user set is kept.
   Trial 0 is the table's values. The time of one trial comes from `tuneloop data estimate`'s calibration
   (a few real optimizer steps) where the recipe has one, and from trial 0 itself once it has run.
2. Cost first: the plan prints the number of trainings and the estimated time before any starts (--dry-run
   prints only the plan). A budget too small for one trial and the test scoring stops with exit code 2.
3. Search: an ordinary study (tuneloop.tune.study) in <output_dir>: TPE, median pruning, judged on validation
   data only; no trial starts once the budget left would not hold it and the final scoring.
4. Finish (tuneloop.tune.finish): the winner's trial trained on all training rows for its full schedule; it
   and trial 0 (the table's defaults, so the search has a baseline) are scored once on the test set.

Ctrl-C stops at the running trial; the same command continues the study, with the time already spent
counted against the budget (auto.json keeps the plan).
"""

from __future__ import annotations

import math
import re
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tuneloop.config.load import validate_config
from tuneloop.config.schema import RunConfig
from tuneloop.errors import ConfigError, TuneloopError
from tuneloop.workspace import read_json, write_json

PLAN_FILE = "auto.json"
MAX_TRIALS = 20
FINAL_SECONDS_PER_ROW = {"generate": 1.5, "score": 0.05}  # test scoring, tuned + baseline, on this CPU
LOAD_SECONDS = 20.0  # per trial: model load, data stage, saving


class BudgetTooSmall(TuneloopError):
    exit_code = 2


def parse_budget(text: str) -> float:
    """Seconds in '30m', '2h', '1h30m', '900s'; a bare number is refused (minutes or seconds?)."""
    cleaned = str(text).strip().lower().replace(" ", "")
    parts = re.fullmatch(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?:in)?)?(?:(\d+(?:\.\d+)?)s)?", cleaned)
    if not cleaned or parts is None or not any(parts.groups()):
        raise ConfigError(f"--auto {text!r}: give the budget with a unit, e.g. 30m, 2h, 1h30m or 900s.")
    hours, minutes, seconds = (float(group or 0) for group in parts.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ConfigError(f"--auto {text!r}: the budget must be more than zero.")
    return total


def minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


# The keys searched per recipe, as functions of the table's value: (key, space entry, trial-0 value).
def auto_space(recipe: str, train: dict[str, Any]) -> dict[str, dict]:
    lr, epochs = float(train["learning_rate"]), float(train["epochs"])
    space: dict[str, dict] = {"train.learning_rate": {"log_uniform": [lr / 4, min(lr * 4, 0.5)]}}
    if recipe in ("classify", "token_classify"):
        space["train.epochs"] = {"int": [1, max(2, round(epochs * 2))]}
        space["train.batch_size"] = {"choice": sorted({8, 16, 32, int(train["batch_size"])})}
    elif recipe in ("sft", "seq2seq", "pretrain"):
        space["train.epochs"] = {"int": [max(1, round(epochs / 2)), max(2, round(epochs * 2))]}
        if train["method"] in ("lora", "dora", "qlora"):
            space["train.lora.rank"] = {"choice": sorted({8, 16, 32, int(train["lora"]["rank"])})}
    elif recipe in ("dpo", "cpo", "simpo", "orpo", "kto"):
        beta = float(train["preference"]["beta"])
        space["train.preference.beta"] = {"log_uniform": [beta / 3, beta * 3]}
    return space


def objective_metric(recipe: str) -> str:
    return {"classify": "accuracy", "token_classify": "entity_f1"}.get(recipe, "validation_loss")


@dataclass
class AutoPlan:
    budget_seconds: float
    recipe: str
    train_rows: int
    metric: str
    space: dict[str, dict]
    kept: list[str]  # keys the user set, which the search leaves alone
    trial0: dict[str, Any]
    trial_seconds: float | None  # one trial, estimated or measured
    estimate_source: str
    final_seconds: float
    trials: int

    def lines(self) -> list[str]:
        said = [f"auto: {self.recipe} on {self.train_rows:,} training rows; searching "
                f"{', '.join(self.space)} on validation {self.metric}"
                + (f" (kept as you set them: {', '.join(self.kept)})" if self.kept else ""),
                f"auto: trial 0 is the defaults table's {', '.join(f'{k}={v}' for k, v in self.trial0.items())}"]
        if self.trial_seconds is None:
            said.append(f"auto: budget {minutes(self.budget_seconds)}; the time of one trial is measured on trial 0 "
                        f"({self.estimate_source}), then the rest are sized to fit")
        else:
            total = self.trials * self.trial_seconds + self.final_seconds
            said.append(f"auto: {self.trials} training(s) of about {minutes(self.trial_seconds)} each "
                        f"({self.estimate_source}) and {minutes(self.final_seconds)} of test scoring: about "
                        f"{minutes(total)} of the {minutes(self.budget_seconds)} budget (pruned trials stop early)")
        return said


def plan_auto(config: RunConfig, budget_seconds: float, console_print=print, probe_dir: Path | None = None) -> AutoPlan:
    """Data stage and defaults in a probe run directory, the search space and the cost estimate."""
    from tuneloop.stages import data_stage, open_for_run, resolve_defaults
    from tuneloop.train.defaults import DEFAULTS_FILE, explicit_keys
    from tuneloop.train.estimate import estimate_for_run
    from tuneloop.tune.objective import base_raw, trial_config

    root = probe_dir or Path(config.output_dir) / "plan"
    probe = trial_config(base_raw(auto_base(config)), {}, root)
    run = open_for_run(probe, overwrite=True)
    data_stage(probe, run, console_print)
    resolved = resolve_defaults(probe, run, console_print)
    recorded = read_json(run.root / DEFAULTS_FILE)
    recipe, rows = recorded["recipe"], recorded["train_rows"]
    train = resolved.model_dump(mode="json")["train"]
    user = explicit_keys(config.train)
    full_space = auto_space(recipe, train)
    space = {key: spec for key, spec in full_space.items() if key.removeprefix("train.") not in user}
    kept = [key for key in full_space if key not in space]
    if not space:
        raise ConfigError(f"--auto: the config sets every key the search would tune ({', '.join(kept)}); remove "
                          "some of them to let --auto search, or run without --auto.")
    trial0 = {}
    for key in space:
        value: Any = train
        for part in key.removeprefix("train.").split("."):
            value = value[part]
        trial0[key] = round(value) if "int" in space[key] else value
    trial_seconds, source = estimate_for_run(resolved, run, console_print)
    if trial_seconds is not None:
        trial_seconds += LOAD_SECONDS
    test_rows = count_test_rows(config)
    kind = "score" if recipe in ("classify", "token_classify") else "generate"
    final = LOAD_SECONDS + FINAL_SECONDS_PER_ROW[kind] * min(test_rows, config.evaluate.max_samples) * 2
    trials = fitting_trials(budget_seconds, trial_seconds, final) if trial_seconds else MAX_TRIALS
    return AutoPlan(budget_seconds, recipe, rows, objective_metric(recipe), space, kept, trial0, trial_seconds,
                    source, final, trials)


def auto_base(config: RunConfig) -> RunConfig:
    """The config every trial starts from: the few-shot preset off (the search replaces its cross-validation)."""
    updates: dict[str, Any] = {"auto": None}  # the budget is this command's, not the trials'
    if "preset" not in config.train.model_fields_set:
        updates["preset"] = "none"
    train = config.train.model_copy(update=updates)
    train.__pydantic_fields_set__.discard("auto")  # so that no dump of a trial's config carries it
    return config.model_copy(update={"train": train})


def count_test_rows(config: RunConfig) -> int:
    if config.data.test_file:
        with open(config.data.test_file, encoding="utf-8") as handle:
            return sum(1 for line in handle if line.strip())
    return config.evaluate.max_samples


def fitting_trials(budget: float, trial_seconds: float, final_seconds: float) -> int:
    return max(0, min(MAX_TRIALS, math.floor((budget - final_seconds) / trial_seconds)))


def check_budget(plan: AutoPlan) -> None:
    if plan.trial_seconds is not None and plan.trials < 1:
        raise BudgetTooSmall(
            f"--auto {minutes(plan.budget_seconds)}: too small for even one trial: one training takes about "
            f"{minutes(plan.trial_seconds)} ({plan.estimate_source}) and scoring the test set about "
            f"{minutes(plan.final_seconds)}. Give at least {minutes(plan.trial_seconds + plan.final_seconds)}, "
            "or train the defaults once with `tuneloop run` (no --auto).")


def search_config(config: RunConfig, plan: AutoPlan, warmup_steps: int = 0) -> RunConfig:
    """The config with the search block the plan describes (the study lives in output_dir)."""
    raw = auto_base(config).model_dump(mode="json", exclude_unset=True)
    raw["output_dir"] = config.output_dir
    raw["search"] = {"objective": {"metric": plan.metric}, "trials": max(1, plan.trials), "sampler": "tpe",
                     "pruner": "median", "pruner_startup_trials": 2, "pruner_warmup_steps": warmup_steps,
                     "space": plan.space}
    return validate_config(raw, "--auto search")


def spent_seconds(study) -> float:
    return sum((t.datetime_complete - t.datetime_start).total_seconds() for t in study.get_trials(deepcopy=False)
               if t.datetime_start and t.datetime_complete)


def run_auto(config: RunConfig, budget_seconds: float, dry_run: bool = False, console_print=print) -> dict | None:
    """The whole --auto run (module doc); returns the study's results, or None for --dry-run."""
    from tuneloop.tune.finish import finish_study
    from tuneloop.tune.study import open_study, plan_study, run_trials, state_counts

    root = Path(config.output_dir)
    saved_path = root / PLAN_FILE
    started = time.monotonic()
    if dry_run:
        import tempfile

        with tempfile.TemporaryDirectory(prefix="tuneloop-auto-plan-") as scratch:
            plan = plan_auto(config, budget_seconds, console_print, Path(scratch) / "plan")
        for line in plan.lines():
            console_print(line)
        check_budget(plan)
        console_print("auto: --dry-run: nothing trained")
        return None
    if saved_path.is_file():
        saved = read_json(saved_path)
        if saved["budget_seconds"] != budget_seconds:
            console_print(f"auto: continuing the study in {root} with the new budget {minutes(budget_seconds)}")
        plan = AutoPlan(**{**saved["plan"], "budget_seconds": budget_seconds})
        console_print(f"auto: continuing the study in {root} ({minutes(saved.get('spent_seconds', 0))} spent)")
    else:
        if root.exists() and any(root.iterdir()):
            raise TuneloopError(f"output_dir: {root} exists and holds no --auto study; choose another directory "
                                "with --set output_dir=runs/NAME.")
        plan = plan_auto(config, budget_seconds, console_print)
        for line in plan.lines():
            console_print(line)
        check_budget(plan)
    planning = time.monotonic() - started

    searching = search_config(config, plan)
    study_plan = plan_study(searching)
    study = open_study(study_plan, target=max(1, plan.trials))
    if not study.trials:
        study.enqueue_trial(plan.trial0)
    spent = spent_seconds(study) + planning + (read_json(saved_path).get("planning_seconds", 0)
                                               if saved_path.is_file() else 0)
    write_json(saved_path, {"budget_seconds": budget_seconds, "plan": asdict(plan), "planning_seconds": planning,
                            "spent_seconds": spent})

    finished = state_counts(study)["COMPLETE"] + state_counts(study)["PRUNED"]
    if finished == 0:  # trial 0 (the defaults) alone, then size the rest from its measured time
        run_trials(study_plan, 1, None, seeded=True, console_print=console_print)
        study = open_study(study_plan)
        trial0 = study.trials[0]
        measured = (trial0.datetime_complete - trial0.datetime_start).total_seconds()
        spent += measured
        plan.trial_seconds = measured
        plan.estimate_source = "measured on trial 0"
        plan.trials = max(1, fitting_trials(budget_seconds - spent + measured, measured, plan.final_seconds))
        console_print(f"auto: trial 0 took {minutes(measured)}; {plan.trials} trial(s) fit the budget "
                      f"({minutes(max(0.0, budget_seconds - spent))} left)")
        write_json(saved_path, {"budget_seconds": budget_seconds, "plan": asdict(plan), "planning_seconds": planning,
                                "spent_seconds": spent})
    left = budget_seconds - spent - plan.final_seconds - (plan.trial_seconds or 0)
    steps = int(study.trials[0].user_attrs.get("steps", 0))
    searching = search_config(config, plan, warmup_steps=steps // 3)
    study_plan = plan_study(searching)
    if plan.trials > 1 and left > 0:
        run_trials(study_plan, plan.trials, max(1.0, left), seeded=True, console_print=console_print)
    elif plan.trials > 1:
        console_print("auto: no time left for another trial; finishing with what ran")
    study_plan.default_values = plan.trial0
    results = finish_study(study_plan, console_print, trials=len(open_study(study_plan).trials))
    spent_total = spent_seconds(open_study(study_plan)) + planning
    results["auto"] = {"budget_seconds": budget_seconds, "plan": asdict(plan),
                       "wall_seconds_this_session": round(time.monotonic() - started, 1),
                       "trial_seconds_total": round(spent_total, 1)}
    write_json(root / "results.json", results)
    shutil.rmtree(root / "plan" / "checkpoints", ignore_errors=True)
    return results
