"""study.html: one self-contained page per study (images embedded as base64, no scripts, no network).

Sections: the winner's test score beside the default config's (with 95% intervals and, for right/wrong
metrics, a paired test), optimization history, validation curves of every trial (pruned ones marked),
parallel coordinates, parameter importances, and the trial table with each trial's state.
"""

from __future__ import annotations

import base64
import io
import json
import math
from html import escape
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402

from tuneloop.workspace import write_text  # noqa: E402

BLUE, ORANGE, GREY, RED = "#4c78a8", "#f58518", "#9aa5b1", "#b42318"
_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:72rem;color:#1d232b;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.1rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde2e8}
table{border-collapse:collapse;margin:.5rem 0}
td,th{padding:.3rem .65rem;border-bottom:1px solid #eef1f4;text-align:left;vertical-align:top}
th{color:#5b6673;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
.muted{color:#5b6673}.COMPLETE{color:#137333}.PRUNED{color:#8a6d00}.FAIL{color:#b42318}img{max-width:100%}
.best{background:#eef6ee}
"""


def write_study_report(plan, study, results: dict) -> Path:
    path = plan.root / "study.html"
    write_text(path, render_study_report(plan, study, results))
    return path


def render_study_report(plan, study, results: dict) -> str:
    trials = study.get_trials(deepcopy=False)
    counts = results.get("trials", {})
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>study {escape(plan.name)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>Study {escape(plan.name)}</h1>",
        f"<p class=muted>{escape(plan.metric)} ({plan.direction}) on validation data; {plan.search.sampler} sampler, "
        f"{plan.search.pruner} pruner" + (f", {plan.search.cv_folds}-fold cross-validation" if plan.search.cv_folds
                                          else "")
        + f"; {counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} pruned, {counts.get('FAIL', 0)} failed"
        + (f"; {_duration(results['wall_seconds'])} wall time" if results.get("wall_seconds") else "")
        + f"; storage {escape(results.get('storage', ''))}</p>",
        _test_comparison(results),
        "<h2>Optimization history</h2>", _img(history_plot(trials, plan.direction), "optimization history"),
        "<h2>What the pruner saw</h2><p class=muted>Each trial's validation loss at every evaluation (with "
        "cross-validation: the objective's mean over the folds so far); pruned trials dashed.</p>",
        _img(intermediate_plot(trials, plan.direction, bool(plan.search.cv_folds)), "intermediate values"),
        "<h2>Parallel coordinates</h2>", _optuna_plot("plot_parallel_coordinate", study),
        "<h2>Parameter importances</h2><p class=muted>fANOVA over the complete trials: how much of the objective's "
        "variation each parameter explains.</p>", _optuna_plot("plot_param_importances", study),
        _trial_table(plan, trials, results),
        "<h2>Space</h2><ul>" + "".join(f"<li><code>{escape(line)}</code></li>" for line in results.get("space", []))
        + "</ul>",
        f"<p class=muted>Browse the same storage live: <code>optuna-dashboard {escape(results.get('storage', ''))}"
        "</code> (pip install optuna-dashboard).</p>",
        "</body></html>",
    ]
    return "".join(parts)


def _test_comparison(results: dict) -> str:
    best, default = results.get("best", {}), results.get("default", {})
    lines = [f"<h2>Winner: trial {best.get('trial')}</h2><p>Values: <code>{escape(json.dumps(best.get('params')))}"
             "</code> (best.yaml reproduces it)</p>"]
    metric = results.get("test_metric")
    if not metric:
        lines.append("<p class=muted>No test set in the config: the winner is judged on validation only.</p>")
        return "".join(lines)
    winner, base = best.get("test", {}), default.get("test", {})
    rows = [("default config (as written)", base, default.get("value")),
            (f"winner (trial {best.get('trial')})", winner, best.get("value"))]
    table = [f"<table><tr><th></th><th>test {escape(metric)} [95% interval]</th><th>validation "
             f"{escape(results['objective']['metric'])}</th></tr>"]
    if winner.get("baseline") is not None:
        table.append(f"<tr><td>{escape(winner.get('baseline_kind', 'baseline'))}</td>"
                     f"<td class=n>{_with_interval(winner['baseline'], winner.get('baseline_interval'))}</td>"
                     "<td></td></tr>")
    for label, test, value in rows:
        shown = _with_interval(test.get("value"), test.get("interval"))
        table.append(f"<tr><td>{escape(label)}</td><td class=n>{shown}</td><td class=n>{_number(value)}</td></tr>")
    table.append("</table>")
    lines += table
    paired = results.get("paired_test")
    if paired:
        verdict = "a real difference" if paired["significant"] else "not distinguishable from noise"
        lines.append(f"<p><b>winner − default: {paired['difference']:+.1f} points (95% CI {paired['low']:+.1f} to "
                     f"{paired['high']:+.1f}; {paired['test']} p {paired['p_value']:.2g}: {verdict})</b></p>")
    lines.append(f"<p class=muted>The test set ({winner.get('rows')} rows) was read once, after the search: every "
                 "trial was judged on validation data.</p>")
    return "".join(lines)


def _trial_table(plan, trials, results: dict) -> str:
    keys = [p.key for p in plan.params]
    best = results.get("best", {}).get("trial")
    head = "".join(f"<th>{escape(k)}</th>" for k in keys)
    rows = [f"<h2>Trials</h2><table><tr><th>#</th><th>state</th><th>{escape(plan.metric)}</th>{head}<th>steps</th>"
            "<th>note</th><th>run</th></tr>"]
    retried_as = {t.system_attrs["failed_trial"]: t.number for t in trials
                  if t.system_attrs.get("failed_trial") is not None}
    for t in trials:
        note = []
        if t.state.name == "FAIL" and t.number in retried_as and not t.user_attrs.get("error"):
            note.append(f"stopped (Ctrl-C, crash or a dead worker); retried as trial {retried_as[t.number]}")
        if t.user_attrs.get("pruned_at") is not None:
            at = t.user_attrs["pruned_at"]
            last = t.intermediate_values.get(at)
            seen = "" if last is None or plan.search.cv_folds else (
                f" (validation loss {abs(last):.4g})")
            note.append(f"pruned at {'fold' if plan.search.cv_folds else 'step'} {at}{seen}")
        if t.system_attrs.get("failed_trial") is not None:
            note.append(f"retry of trial {t.system_attrs['failed_trial']}")
        if t.user_attrs.get("fold_values"):
            values = t.user_attrs["fold_values"]
            note.append(f"folds {', '.join(f'{v:.4g}' for v in values)}"
                        + (f" (± {t.user_attrs['fold_std']:.3g})" if "fold_std" in t.user_attrs else ""))
        if t.user_attrs.get("error"):
            note.append(t.user_attrs["error"][:160])
        run_dir = t.user_attrs.get("run_dir")
        link = ""
        if run_dir:
            where, root = Path(run_dir).resolve(), plan.root.resolve()
            relative = where.relative_to(root) if where.is_relative_to(root) else where
            link = f"<a href='{escape(str(relative))}/'>{escape(str(relative))}</a>"
        cells = "".join(f"<td class=n>{_number(t.params.get(k))}</td>" for k in keys)
        rows.append(f"<tr class='{'best' if t.number == best else ''}'><td>{t.number}</td>"
                    f"<td class={t.state.name}>{t.state.name.lower()}</td>"
                    f"<td class=n>{_number(t.value if t.state.name == 'COMPLETE' else None)}</td>{cells}"
                    f"<td class=n>{t.user_attrs.get('steps', '')}</td><td>{escape('; '.join(note))}</td>"
                    f"<td>{link}</td></tr>")
    rows.append("</table>")
    return "".join(rows)


def history_plot(trials, direction: str) -> bytes | None:
    """Objective of each complete trial by number, and the best so far."""
    done = [(t.number, t.value) for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    if not done:
        return None
    figure, axis = plt.subplots(figsize=(7, 3.4))
    numbers, values = zip(*done, strict=True)
    axis.scatter(numbers, values, color=BLUE, s=22, label="complete trial", zorder=3)
    best, running = [], None
    for value in values:
        better = min if direction == "minimize" else max
        running = value if running is None else better(running, value)
        best.append(running)
    axis.step(numbers, best, where="post", color=ORANGE, linewidth=1.6, label="best so far")
    pruned = [t.number for t in trials if t.state.name == "PRUNED"]
    for number in pruned:
        axis.axvline(number, color=GREY, alpha=0.35, linewidth=1)
    axis.set_xlabel("trial" + (" (grey lines: pruned)" if pruned else ""))
    axis.set_ylabel("objective")
    axis.grid(alpha=0.3)
    axis.legend(frameon=False)
    return _png(figure)


def intermediate_plot(trials, direction: str, folds: bool = False) -> bytes | None:
    """Every trial's reported values by step: validation loss (reported negated to maximize studies, shown as
    the loss), or with cross-validation the running mean of the objective over the folds."""
    sign = -1.0 if direction == "maximize" and not folds else 1.0
    curves = [(t, sorted(t.intermediate_values.items())) for t in trials if t.intermediate_values]
    if not curves:
        return None
    figure, axis = plt.subplots(figsize=(7, 3.4))
    for trial, points in curves:
        steps, values = zip(*points, strict=True)
        values = [sign * v for v in values]
        pruned = trial.state.name == "PRUNED"
        axis.plot(steps, values, linestyle="--" if pruned else "-", color=GREY if pruned else BLUE, alpha=0.8,
                  linewidth=1.2, marker="o", markersize=3)
    axis.set_xlabel("fold" if folds else "optimizer step")
    axis.set_ylabel("objective, mean of the folds so far" if folds else "validation loss")
    axis.grid(alpha=0.3)
    return _png(figure)


def _optuna_plot(name: str, study) -> str:
    """An optuna.visualization.matplotlib figure, or a note on why it cannot be drawn yet."""
    import warnings

    import optuna

    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    if len(complete) < 2:
        return "<p class=muted>Needs at least two complete trials.</p>"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the matplotlib backend is marked experimental
            axes = getattr(optuna.visualization.matplotlib, name)(study)
    except Exception as exc:  # e.g. importances when every complete trial has the same values
        return f"<p class=muted>Not drawn: {escape(str(exc))}</p>"
    axis = axes.flat[0] if hasattr(axes, "flat") else axes
    return _img(_png(axis.figure), name)


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def _img(png: bytes | None, alt: str) -> str:
    if not png:
        return "<p class=muted>Nothing to draw yet.</p>"
    return f"<img alt='{escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def _number(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return escape(str(value))


def _with_interval(value, interval) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" + (f" [{interval[0]:.1f}, {interval[1]:.1f}]" if interval else "")


def _duration(seconds: float) -> str:
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"
