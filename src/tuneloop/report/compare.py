"""Compare runs: one table and one chart of their held-out metrics (tuned, with the first run's baseline)."""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from tuneloop.report import plots
from tuneloop.workspace import open_run_dir, read_json, write_text

SKIPPED = ("validation_tokens",)


def compare_runs(run_dirs: list[Path], out: Path) -> dict:
    runs = [open_run_dir(path) for path in run_dirs]
    metrics = {run.root.name: read_json(run.metrics) for run in runs if run.metrics.is_file()}
    missing = [run.root.name for run in runs if run.root.name not in metrics]
    keys = list(dict.fromkeys(k for found in metrics.values() for k in found.get("tuned", {}) if k not in SKIPPED))
    first = next(iter(metrics.values()), {})
    columns = ["metric", f"baseline ({runs[0].root.name})"] + list(metrics)
    rows = [[key, first.get("baseline", {}).get(key, "–")] + [found.get("tuned", {}).get(key, "–")
                                                               for found in metrics.values()] for key in keys]
    chart_keys = [k for k in keys if k not in ("validation_loss", "perplexity")]
    chart = plots.compare_runs(list(metrics), {k: [m.get("tuned", {}).get(k) for m in metrics.values()]
                                               for k in chart_keys}) if chart_keys and metrics else None
    trade_off = task_vs_forgetting_chart(metrics)
    write_text(out, _page(columns, rows, chart, missing, trade_off))
    return {"columns": columns, "rows": rows, "missing": missing}


def task_vs_forgetting_chart(metrics: dict[str, dict]) -> bytes | None:
    """The task metric of each run against its forgetting (drift KL, else accuracy lost on the first forgetting
    file); None unless at least two runs have both."""
    task = next((k for k in ("contains_answer", "exact_match", "rouge_l", "accuracy", "domain_perplexity")
                 if all(k in found.get("tuned", {}) for found in metrics.values())), None)
    points, label = [], None
    for name, found in metrics.items():
        if "drift" in found:
            x, label = found["drift"]["kl_per_token"], "KL(tuned || base) on general text, nats/token"
        elif found.get("forgetting"):
            x, label = -next(iter(found["forgetting"].values()))["change"], "accuracy lost on the forgetting file"
        else:
            continue
        if task:
            points.append((name, x, found["tuned"][task]))
    return plots.task_vs_forgetting(points, task, label) if task and len(points) >= 2 else None


def _page(columns: list[str], rows: list[list], chart: bytes | None, missing: list[str],
          trade_off: bytes | None = None) -> str:
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{v:.2f}</td>" if isinstance(v, float) else f"<td>{escape(str(v))}</td>"
                                    for v in row) + "</tr>" for row in rows)
    image = f"<img alt='tuned metrics per run' src='data:image/png;base64,{base64.b64encode(chart).decode()}'>" \
        if chart else ""
    if trade_off:
        image += (f"<h2>Task vs forgetting</h2><img alt='task metric against forgetting per run' "
                  f"src='data:image/png;base64,{base64.b64encode(trade_off).decode()}'>")
    note = f"<p>Not evaluated yet: {escape(', '.join(missing))}</p>" if missing else ""
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>Run comparison</title><style>"
            "body{font:15px system-ui,sans-serif;margin:2rem auto;max-width:66rem}td,th{padding:.3rem .6rem;"
            "border-bottom:1px solid #eee;text-align:left}img{max-width:100%}</style></head><body>"
            f"<h1>Run comparison</h1>{note}<table><tr>{head}</tr>{body}</table>{image}</body></html>")
