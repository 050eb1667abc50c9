"""report.html of a multi-stage run: each stage's headline metrics (baseline vs tuned), linking its own report.

Reads output_dir/chain.json and each stage's run directory, so `tuneloop report OUTPUT_DIR` rebuilds
it. A stage's baseline is the model it started from (the previous stage's output), so each row shows
what that stage added. When every stage scored the same evaluate.general_text, a second table
follows general perplexity along the whole chain (forgetting shows as a rise).
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from tuneloop.report.html import STYLE, lower_is_better
from tuneloop.workspace import read_json, write_text

# The first few of these that a stage measured are its headline.
HEADLINE_METRICS = ("domain_perplexity", "general_perplexity", "accuracy", "f1_macro", "contains_answer", "rouge_l",
                    "token_f1", "exact_match", "perplexity")
SHOWN_PER_STAGE = 4


def write_chain_report(root: Path) -> Path:
    path = root / "report.html"
    write_text(path, render_chain_report(root))
    return path


def render_chain_report(root: Path) -> str:
    stages = read_json(root / "chain.json")["stages"]
    found = [(stage, _metrics(root / stage["run_dir"])) for stage in stages]
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(root.name)} multi-stage report"
        f"</title><style>{STYLE}</style></head><body><h1>{escape(root.name)}</h1>",
        f"<p class=muted>{len(stages)} stage(s), each starting from the one before: "
        + " → ".join(escape(stage["name"]) for stage in stages) + ". A stage's baseline is the model it started "
        "from, so each row shows what that stage changed.</p>",
        _stage_table(root, found),
        _along_the_chain(found),
        "<p class=muted>Config: chain.yaml; state: chain.json.</p></body></html>",
    ]
    return "".join(parts)


def _metrics(run_dir: Path) -> dict:
    return read_json(run_dir / "metrics.json") if (run_dir / "metrics.json").is_file() else {}


def _stage_table(root: Path, found: list[tuple[dict, dict]]) -> str:
    rows = []
    for number, (stage, metrics) in enumerate(found, start=1):
        summary_path = root / stage["run_dir"] / "train_summary.json"
        summary = read_json(summary_path) if summary_path.is_file() else {}
        trained = f"{summary.get('steps')} steps, {summary.get('seconds')} s" if summary else "–"
        link = f"{stage['run_dir']}/report.html"
        name = (f"<a href='{escape(link)}'>{escape(stage['name'])}</a>" if (root / link).is_file()
                else escape(stage["name"]))
        rows.append(
            f"<tr><td class=n>{number}</td><td>{name}<br><span class=muted>{escape(stage.get('status', ''))}</span>"
            f"</td><td>{escape(stage.get('recipe', ''))} ({escape(stage.get('method', ''))})<br><span class=muted>"
            f"{escape(stage.get('format', ''))} data</span></td><td>{escape(trained)}</td>"
            f"<td>{_headline_cells(metrics)}</td></tr>"
        )
    return ("<h2>Stages</h2><table><tr><th>#</th><th>stage</th><th>recipe</th><th>training</th>"
            f"<th>headline metrics: baseline → tuned (change)</th></tr>{''.join(rows)}</table>")


def _headline_cells(metrics: dict) -> str:
    tuned, baseline = metrics.get("tuned", {}), metrics.get("baseline", {})
    keys = [key for key in HEADLINE_METRICS if key in tuned][:SHOWN_PER_STAGE]
    if not keys:
        return "<span class=muted>not evaluated</span>"
    lines = []
    for key in keys:
        if key in baseline:
            change = tuned[key] - baseline[key]
            better = (change < 0) == lower_is_better(key)
            lines.append(f"{escape(key)}: {baseline[key]:.2f} → {tuned[key]:.2f} "
                         f"<span class={'up' if better else 'down'}>({change:+.2f})</span>")
        else:
            lines.append(f"{escape(key)}: {tuned[key]:.2f}")
    return "<br>".join(lines)


def _along_the_chain(found: list[tuple[dict, dict]]) -> str:
    """General-text perplexity after every stage, when all stages scored the same general text."""
    measured = [metrics for _, metrics in found]
    files = {", ".join(m.get("perplexity_sets", {}).get("general", {}).get("files", [])) for m in measured}
    if len(measured) < 2 or len(files) != 1 or not all("general_perplexity" in m.get("tuned", {}) for m in measured):
        return ""
    head = "".join(f"<th>after {escape(stage['name'])}</th>" for stage, _ in found)
    rows = "".join(
        f"<tr><td>{key}</td><td class=n>{_number(measured[0].get('baseline', {}).get(key))}</td>"
        + "".join(f"<td class=n>{_number(m['tuned'][key])}</td>" for m in measured) + "</tr>"
        for key in ("general_perplexity", "general_loss")
    )
    return (f"<h2>General text along the chain</h2><table><tr><th>metric</th><th>start</th>{head}</tr>{rows}</table>"
            f"<p class=muted>The same general text ({escape(files.pop())}) scored after every stage: a rise is "
            "forgetting of general language.</p>")


def _number(value) -> str:
    return "–" if value is None else f"{value:.2f}"
