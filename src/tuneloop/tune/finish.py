"""The end of a study: pick the winner, write best.yaml, score the winner and the default config on the test set
(once), and write results.json and study.html.

The winner is scored in its own trial directory when it is on this host (with cross-validation, or when it ran
elsewhere, its config is trained once more in <study>/best). The default is the base config as written, trained
like a trial in <study>/default. A finished study run again reprints its results without reading the test set.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from tuneloop.config.load import load_run_config, validate_config
from tuneloop.config.schema import RunConfig, config_to_yaml
from tuneloop.config.search_space import with_values
from tuneloop.errors import TuneloopError
from tuneloop.stages import evaluate_stage, report_stage
from tuneloop.tune.objective import record_trial, run_trial_config, trial_config
from tuneloop.tune.study import StudyPlan, flatten_params, open_study, redact, state_counts
from tuneloop.workspace import RunDir, read_json, read_jsonl, write_json, write_text


def test_metric_for(data_format: str | None, objective_metric: str, config: RunConfig) -> str:
    """The headline test score: the objective's own metric when it is a task metric, else the task's usual one."""
    if objective_metric != "validation_loss":
        return objective_metric
    if data_format == "classification":
        return "accuracy"
    if data_format == "token_classification":
        return "entity_f1"
    if data_format == "text":
        return "domain_perplexity"
    from tuneloop.config.schema import generation_metrics

    metrics = generation_metrics(config.evaluate, data_format)
    return "rouge_l" if "rouge_l" in metrics else metrics[0]


def finish_study(plan: StudyPlan, console_print=print, trials: int | None = None) -> dict:
    """Pick the winner; write best.yaml; score the winner and the default config on the test set (once);
    write results.json and study.html."""
    from optuna.trial import TrialState

    from tuneloop.tune.report import write_study_report

    study = open_study(plan)
    trials = study.get_trials(deepcopy=False)
    if not any(t.state == TrialState.COMPLETE for t in trials):
        raise TuneloopError(f"study {plan.name}: no trial completed ({dict(state_counts(study))}); nothing to pick. "
                            "Run the command again to continue, or look at the failed trials' trial.json.")
    best = study.best_trial
    best_raw = with_values(plan.base, best.params)
    best_raw["output_dir"] = str(plan.root / "best")
    best_config = validate_config(best_raw, "best.yaml")
    write_text(plan.root / "best.yaml", f"# The winner of study {plan.name} (trial {best.number}, {plan.metric} "
               f"{best.value:.6g} on validation): a plain config, `tuneloop run` it to reproduce the winner.\n"
               + config_to_yaml(best_config))

    results_path = plan.root / "results.json"
    previous = read_json(results_path) if results_path.is_file() else {}
    data = plan.config.data
    test_file = data.test_file
    results: dict[str, Any] = {
        "study": plan.name, "storage": redact(plan.storage_url),
        "objective": {"metric": plan.metric, "direction": plan.direction},
        "space": flatten_params(plan.params), "sampler": plan.search.sampler, "pruner": plan.search.pruner,
        "cv_folds": plan.search.cv_folds, "target_trials": plan.target(trials),
        "trials": dict(state_counts(study)), "steps": steps_by_state(trials), "wall_seconds": wall_seconds(trials),
    }
    if previous.get("best", {}).get("trial") == best.number and previous.get("default", {}).get("test"):
        console_print("tune: the winner and the default config were already scored on the test set; not again")
        results["best"], results["default"] = previous["best"], previous["default"]
        results["test_metric"] = previous.get("test_metric")
        results["paired_test"] = previous.get("paired_test")
    else:
        winner_run, winner_value = winner_run_dir(plan, best, console_print)
        default_run, default_value = default_run_dir(plan, console_print)
        results["best"] = {"trial": best.number, "params": best.params, "value": best.value,
                           "retrained_value": winner_value, "run_dir": str(winner_run.root)}
        results["default"] = {"value": default_value, "run_dir": str(default_run.root)}
        if test_file or data.test_size:
            console_print(f"tune: scoring the winner (trial {best.number}) on the test set")
            metric = test_metric_for(winner_run.data_format(), plan.metric, plan.config)
            results["test_metric"] = metric
            results["best"]["test"] = headline(score_on_test(winner_run, test_file, True, console_print), metric)
            if previous.get("default", {}).get("test"):  # a study continued after a new winner: scored before
                results["default"]["test"] = previous["default"]["test"]
            else:
                console_print("tune: scoring the default config on the test set")
                results["default"]["test"] = headline(score_on_test(default_run, test_file, False, console_print),
                                                      metric)
            if metric == "accuracy":
                results["paired_test"] = paired_accuracy_test(default_run, winner_run)
        else:
            console_print("tune: the config has no test set (data.test_file or data.test_size); the winner is "
                          "reported on validation only")
    write_json(results_path, results)
    report = write_study_report(plan, study, results)
    results["report"] = str(report)
    return results


def winner_run_dir(plan: StudyPlan, best, console_print) -> tuple[RunDir, float | None]:
    """The winning trial's run directory when it is here with its weights; else the winner trained again."""
    trial_dir = RunDir(Path(best.user_attrs.get("run_dir", "")))
    if not plan.search.cv_folds and best.user_attrs.get("run_dir") and trial_dir.trained_weights() is not None:
        return trial_dir, None
    why = "cross-validation trains no single model" if plan.search.cv_folds else "its run directory is not here"
    console_print(f"tune: training the winner's config once more ({why})")
    return trained_once(plan, best.params, plan.root / "best", console_print)


def default_run_dir(plan: StudyPlan, console_print) -> tuple[RunDir, float | None]:
    """The base config trained once; with plan.default_values, the complete trial that ran those values."""
    from optuna.trial import TrialState

    if plan.default_values is not None:
        for trial in open_study(plan).get_trials(deepcopy=False):
            run = RunDir(Path(trial.user_attrs.get("run_dir", "")))
            if trial.state == TrialState.COMPLETE and trial.params == plan.default_values \
                    and run.trained_weights() is not None:
                return run, trial.value
    return trained_once(plan, {}, plan.root / "default", console_print)


def trained_once(plan: StudyPlan, values: dict, output_dir: Path, console_print) -> tuple[RunDir, float | None]:
    """A run of base + values trained like a trial (no pruning), reused when a previous session finished it."""
    run = RunDir(output_dir)
    done = run.root / "trial.json"
    if done.is_file() and read_json(done).get("state") == "complete" and run.trained_weights() is not None:
        return run, read_json(done).get("value")
    if not values:
        console_print("tune: training the default config (the base config as written) for the comparison")
    outcome = run_trial_config(trial_config(plan.base, values, output_dir, plan.tracking), plan.metric, None,
                               console_print)
    record_trial(output_dir, -1, values, "complete", outcome.value, steps=outcome.steps)
    return outcome.run, outcome.value


def score_on_test(run: RunDir, test_file: str | None, baseline: bool, console_print) -> dict:
    """The evaluate stage on the test set (the file, or the run's data.test_size split), and the run's report."""
    config = load_run_config(run)
    config.evaluate.baseline = baseline  # the untuned baseline is the same for both: score it once
    results = evaluate_stage(config, run, data_file=test_file, console_print=console_print)
    report_stage(run, console_print)
    return results


def headline(results: dict, metric: str) -> dict:
    tuned = results.get("tuned", {})
    interval = results.get("intervals", {}).get("tuned", {}).get(metric)
    base = results.get("baseline", {}).get(metric)
    base_interval = results.get("intervals", {}).get("baseline", {}).get(metric)
    return {"metric": metric, "value": tuned.get(metric), "interval": interval, "rows": results.get("heldout", {})
            .get("rows"), "baseline": base, "baseline_interval": base_interval,
            "baseline_kind": results.get("baseline_kind", "untuned model"), "all": tuned}


def paired_accuracy_test(default_run: RunDir, winner_run: RunDir) -> dict | None:
    """Winner minus default on the same test rows: paired bootstrap interval of the difference, McNemar's test."""
    from tuneloop.evaluate.stats import compare

    default_rows, winner_rows = read_jsonl(default_run.samples), read_jsonl(winner_run.samples)
    if not default_rows or len(default_rows) != len(winner_rows) or any(
            a["reference"] != b["reference"] for a, b in zip(default_rows, winner_rows, strict=True)):
        return None
    points = [[100.0 * (row["tuned"] == row["reference"]) for row in rows] for rows in (default_rows, winner_rows)]
    return compare(points[0], points[1], binary=True)


def steps_by_state(trials) -> dict[str, int]:
    steps: Counter = Counter()
    for t in trials:
        steps[t.state.name] += int(t.user_attrs.get("steps", 0))
    return dict(steps) | {"total": sum(steps.values())}


def wall_seconds(trials) -> float | None:
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    return round((max(ends) - min(starts)).total_seconds(), 1) if starts and ends else None
