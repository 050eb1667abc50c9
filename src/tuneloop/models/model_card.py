"""The model card (README.md) that goes into every export: what the model is, its evidence, its data, its limits."""

from __future__ import annotations

from pathlib import Path

from tuneloop.config.schema import RunConfig
from tuneloop.workspace import RunDir, read_json


def model_card(config: RunConfig, run: RunDir, kind: str) -> str:
    lines = [
        f"# {Path(config.output_dir).name}",
        "",
        f"Fine-tuned with tuneloop from `{config.model.name}` ({config.train.method}); this export is a {kind}.",
        "",
        "## Data",
        "",
        f"- training data: `{config.data.train_file}` ({config.data.format} format)",
        f"- held-out data: `{config.data.test_file or 'a validation split of the training data'}`",
    ]
    audit = run.root / "audit" / "audit.json"
    if audit.is_file():
        findings = read_json(audit)["summary"]
        lines += [f"- data audit: {len(findings)} finding(s)"] + [f"  - {f['severity']}: {f['message']}"
                                                                   for f in findings[:8]]
    if run.metrics.is_file():
        lines += _results(read_json(run.metrics))
    summary = run.root / "train_summary.json"
    if summary.is_file():
        train = read_json(summary)
        lines += ["", "## Training", "", f"{train['method']}, {train['steps']} steps, {train['seconds']} s on "
                  f"{train['device']} ({train['compute_dtype']}); learning rate {config.train.learning_rate}, "
                  f"batch {config.train.batch_size}, seed {config.seed}."]
        if train.get("trainable_parameters") is not None:
            total = train.get("total_parameters")
            share = f" of {total:,} ({100 * train['trainable_parameters'] / total:.2f}%)" if total else ""
            peak = train.get("peak_memory_mb")
            lines.append(f"Trainable parameters: {train['trainable_parameters']:,}{share}"
                         + (f"; peak memory {peak:,.0f} MB." if peak else "."))
    lines += [
        "",
        "## Limits",
        "",
        "A model tuned on a specific dataset answers what that data covers and can state wrong facts",
        "confidently outside it. Check the held-out results and the forgetting check above before relying on it.",
        "",
    ]
    return "\n".join(lines)


def _results(metrics: dict) -> list[str]:
    heldout = metrics["heldout"]
    intervals = metrics.get("intervals", {})
    lines = ["", f"## Held-out results ({heldout['rows']} rows, split: {heldout['split']}; "
             f"status: {metrics.get('status', 'n/a')})", "",
             "| metric | baseline | tuned | 95% interval (tuned) | p (paired) |", "|---|---|---|---|---|"]
    for key, value in metrics["tuned"].items():
        if key == "validation_tokens":
            continue
        base = metrics.get("baseline", {}).get(key)
        interval = intervals.get("tuned", {}).get(key)
        test = metrics.get("comparison", {}).get(key)
        shown_base = "-" if base is None else f"{base:.2f}"
        shown_interval = f"{interval[0]:.1f} – {interval[1]:.1f}" if interval else ""
        shown_p = f"{test['p_value']:.3g}" if test else ""
        lines.append(f"| {key} | {shown_base} | {value:.2f} | {shown_interval} | {shown_p} |")
    for path, found in metrics.get("forgetting", {}).items():
        lines.append(f"\nForgetting check `{Path(path).name}`: accuracy {found['baseline']['acc']:.1f} → "
                     f"{found['tuned']['acc']:.1f} ({found['change']:+.1f} points, {found['n']} questions).")
    if metrics.get("safety"):
        gate = metrics["safety"]
        lines.append(f"\nSafety gate (`{gate['scorer']}` on {gate['prompts']} prompts): harmlessness "
                     f"{gate['baseline_score']:.3f} → {gate['tuned_score']:.3f}, "
                     f"{'passed' if gate['passed'] else 'failed'} ({gate['rule']}).")
    for failure in metrics.get("failures", []):
        lines.append(f"\n**Failed:** {failure}")
    return lines
