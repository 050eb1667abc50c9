"""`tuneloop monitor STORE --out monitor.html`: one self-contained page (plots embedded as PNG) on a store.

Sections: alerts, traffic, latency percentiles and errors over time, feedback per model and A/B variant with
intervals and the two-proportion test, drift of incoming prompts from each run's training data (far share,
length, language), PII found, and the prompts with the most thumbs-down.
"""

from __future__ import annotations

import base64
import io
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from html import escape
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: no display needed

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402

from tuneloop.serve import monitor_stats as ms  # noqa: E402
from tuneloop.serve.store import read_tables  # noqa: E402
from tuneloop.workspace import write_text  # noqa: E402

STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#1d232b;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.1rem}h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #dde2e8}
table{border-collapse:collapse;margin:.5rem 0}td,th{padding:.3rem .65rem;border-bottom:1px solid #eef1f4;
text-align:left;vertical-align:top}th{color:#5b6673;font-weight:600}td.n{text-align:right;
font-variant-numeric:tabular-nums}.muted{color:#5b6673}img{max-width:100%}
.alert{background:#fce8e6;color:#b42318;padding:.5rem .8rem;border-radius:6px;margin:.3rem 0;font-weight:600}
.ok{background:#e6f4ea;color:#137333;padding:.5rem .8rem;border-radius:6px}
.ex{font:13px ui-monospace,monospace;background:#f6f8fa;padding:.15rem .35rem;border-radius:4px;
white-space:pre-wrap;word-break:break-word}
"""
COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2", "#9d755d"]


def write_monitor(url: str, out: Path, since: datetime | None = None, drift_threshold: float = 0.3) -> dict:
    """Write the page; returns {"alerts": [...], "requests": n, "feedback": n}."""
    requests, feedback = read_tables(url, since)
    page, alerts = render_monitor(requests, feedback, drift_threshold, url)
    write_text(Path(out), page)
    return {"alerts": alerts, "requests": len(requests), "feedback": len(feedback)}


def render_monitor(requests: list[dict], feedback: list[dict], drift_threshold: float, source: str) -> tuple[str, list]:
    answered = [r for r in requests if r["status"] == 200]
    alerts: list[str] = []
    drift_html = _drift(answered, drift_threshold, alerts)
    feedback_html = _feedback(answered, feedback, alerts)
    errors = [r for r in requests if r["status"] != 200]
    if requests and len(errors) / len(requests) > 0.05:
        alerts.append(f"{len(errors) / len(requests):.0%} of requests were refused or failed")
    span = (f"{requests[0]['created_at']:%Y-%m-%d %H:%M:%S} to {requests[-1]['created_at']:%Y-%m-%d %H:%M:%S} UTC"
            if requests else "no requests")
    parts = [
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>tuneloop monitor</title>"
        f"<style>{STYLE}</style></head><body><h1>tuneloop monitor</h1>",
        f"<p class=muted>{escape(_safe_source(source))}: {len(requests)} requests ({len(answered)} answered, "
        f"{len(errors)} refused or failed), {len(feedback)} feedback, {span}</p>",
        "<h2>Alerts</h2>" + ("".join(f"<div class=alert>{escape(a)}</div>" for a in alerts) or
                             "<div class=ok>No alerts.</div>"),
        _traffic(requests, answered), _latency(answered), _errors(errors), feedback_html, drift_html,
        _pii(requests), _thumbs_down(answered, feedback), "</body></html>",
    ]
    return "\n".join(parts), alerts


def _safe_source(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _png(figure) -> str:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return f"<img alt='' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def _time_axis(axis) -> None:
    axis.xaxis.set_major_formatter(mdates.ConciseDateFormatter(axis.xaxis.get_major_locator()))
    axis.grid(alpha=0.3)


def _buckets(rows: list[dict], target: int = 40) -> tuple[list[datetime], list[list[dict]]]:
    """Rows grouped into about `target` equal time buckets (at least one second wide)."""
    if not rows:
        return [], []
    start, end = rows[0]["created_at"], rows[-1]["created_at"]
    width = max(1.0, (end - start).total_seconds() / target)
    groups: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        groups[int((row["created_at"] - start).total_seconds() // width)].append(row)
    keys = range(max(groups) + 1)
    return [start + timedelta(seconds=(k + 0.5) * width) for k in keys], [groups.get(k, []) for k in keys]


def _traffic(requests: list[dict], answered: list[dict]) -> str:
    if not requests:
        return "<h2>Traffic</h2><p class=muted>No requests in this period.</p>"
    times, groups = _buckets(requests)
    variants = sorted({r["variant"] or "?" for r in answered})
    figure, axis = plt.subplots(figsize=(9, 3))
    for index, variant in enumerate(variants):
        axis.plot(times, [sum(r["status"] == 200 and (r["variant"] or "?") == variant for r in g) for g in groups],
                  color=COLORS[index % len(COLORS)], label=variant, linewidth=1.5)
    axis.set_ylabel("answered per bucket")
    axis.legend(frameon=False, fontsize=8)
    _time_axis(axis)
    rows = Counter((r["model"], r["variant"]) for r in answered)
    tokens = defaultdict(int)
    for r in answered:
        tokens[(r["model"], r["variant"])] += r["completion_tokens"] or 0
    table = "".join(f"<tr><td>{escape(str(m))}</td><td>{escape(str(v))}</td><td class=n>{n}</td>"
                    f"<td class=n>{tokens[(m, v)]}</td></tr>" for (m, v), n in sorted(rows.items(), key=str))
    return (f"<h2>Traffic</h2>{_png(figure)}<table><tr><th>model asked for</th><th>variant (answered)</th>"
            f"<th>requests</th><th>tokens generated</th></tr>{table}</table>")


def _latency(answered: list[dict]) -> str:
    if not answered:
        return ""
    times, groups = _buckets(answered)
    figure, axis = plt.subplots(figsize=(9, 3))
    for q, color in ((50, COLORS[0]), (90, COLORS[1]), (99, COLORS[3])):
        axis.plot(times, [ms.percentile([r["latency_s"] for r in g], q) if g else None for g in groups],
                  color=color, label=f"p{q}", linewidth=1.5)
    axis.set_ylabel("latency (s)")
    axis.legend(frameon=False, fontsize=8)
    _time_axis(axis)
    by_variant = defaultdict(list)
    for r in answered:
        by_variant[r["variant"]].append(r)
    rows = []
    for variant, group in sorted(by_variant.items(), key=str):
        latency = [r["latency_s"] for r in group]
        first = [r["ttft_s"] for r in group if r["ttft_s"] is not None]
        rows.append(f"<tr><td>{escape(str(variant))}</td><td class=n>{len(group)}</td>" + "".join(
            f"<td class=n>{ms.percentile(latency, q):.3f}</td>" for q in (50, 90, 99))
            + f"<td class=n>{ms.percentile(first, 50) or 0:.3f}</td></tr>")
    return (f"<h2>Latency</h2>{_png(figure)}<table><tr><th>variant</th><th>n</th><th>p50 s</th><th>p90 s</th>"
            f"<th>p99 s</th><th>first token p50 s</th></tr>{''.join(rows)}</table>")


def _errors(errors: list[dict]) -> str:
    if not errors:
        return "<h2>Errors</h2><p class=muted>No refused or failed requests.</p>"
    times, groups = _buckets(errors)
    figure, axis = plt.subplots(figsize=(9, 2.6))
    statuses = sorted({r["status"] for r in errors})
    bottom = [0] * len(groups)
    width = (times[1] - times[0]) * 0.9 if len(times) > 1 else timedelta(seconds=1)
    if len(times) == 1:  # one bucket: show a minute around it rather than a bar filling the axis
        axis.set_xlim(times[0] - timedelta(seconds=30), times[0] + timedelta(seconds=30))
    for index, status in enumerate(statuses):
        counts = [sum(r["status"] == status for r in g) for g in groups]
        axis.bar(times, counts, bottom=bottom, width=width, color=COLORS[(index + 3) % len(COLORS)], label=str(status))
        bottom = [b + c for b, c in zip(bottom, counts, strict=True)]
    axis.set_ylabel("errors per bucket")
    axis.legend(frameon=False, fontsize=8, title="status")
    _time_axis(axis)
    common = Counter((r["status"], (r["error"] or "")[:160]) for r in errors).most_common(8)
    rows = "".join(f"<tr><td class=n>{s}</td><td class=n>{n}</td><td>{escape(m)}</td></tr>" for (s, m), n in common)
    return (f"<h2>Errors</h2>{_png(figure)}<table><tr><th>status</th><th>count</th><th>message</th></tr>{rows}"
            "</table>")


def _feedback(answered: list[dict], feedback: list[dict], alerts: list[str]) -> str:
    ratings = ms.latest_ratings(feedback)
    by_key = defaultdict(lambda: [0, 0, 0])  # requests, rated, positive
    for r in answered:
        for key in (("model", r["model"]), ("variant", r["variant"])):
            counts = by_key[key]
            counts[0] += 1
            if r["id"] in ratings:
                counts[1] += 1
                counts[2] += ratings[r["id"]] >= ms.POSITIVE_SCORE
    rows, labels, shares, errors = [], [], [], []
    for (kind, name), (total, rated, positive) in sorted(by_key.items(), key=str):
        interval = ms.wilson_interval(positive, rated)
        share = f"{positive / rated:.1%} [{interval[0]:.1%}, {interval[1]:.1%}]" if rated else "-"
        rows.append(f"<tr><td>{kind}</td><td>{escape(str(name))}</td><td class=n>{total}</td><td class=n>{rated}"
                    f"</td><td class=n>{rated / total:.1%}</td><td class=n>{share}</td></tr>")
        if kind == "variant" and rated:
            labels.append(str(name))
            shares.append(positive / rated)
            errors.append((positive / rated - interval[0], interval[1] - positive / rated))
    html = ["<h2>Feedback</h2>"]
    if labels:
        figure, axis = plt.subplots(figsize=(max(4, 1.3 * len(labels)), 2.8))
        axis.bar(labels, shares, yerr=list(zip(*errors, strict=True)), capsize=4, color=COLORS[: len(labels)])
        axis.set_ylabel("thumbs-up share")
        axis.set_ylim(0, 1)
        axis.grid(alpha=0.3, axis="y")
        html.append(_png(figure))
    html.append("<table><tr><th></th><th>name</th><th>requests</th><th>rated</th><th>feedback rate</th>"
                "<th>thumbs-up share [95% Wilson]</th></tr>" + "".join(rows) + "</table>")
    html.append(_ab_tests(answered, ratings, alerts))
    html.append(_preferences(answered, feedback))
    return "".join(html)


def _ab_tests(answered: list[dict], ratings: dict, alerts: list[str]) -> str:
    """For each model name answered by more than one variant: each variant against the busiest one."""
    variants_of = defaultdict(Counter)
    for r in answered:
        variants_of[r["model"]][r["variant"]] += 1
    rows = []
    for model, variants in sorted(variants_of.items(), key=str):
        if len(variants) < 2:
            continue
        counts = {}
        for variant in variants:
            rated = [ratings[r["id"]] for r in answered if r["model"] == model and r["variant"] == variant
                     and r["id"] in ratings]
            counts[variant] = (sum(s >= ms.POSITIVE_SCORE for s in rated), len(rated))
        control = variants.most_common(1)[0][0]
        for variant in variants:
            if variant == control:
                continue
            test = ms.two_proportion_test(*counts[control], *counts[variant])
            if test is None:
                rows.append(f"<tr><td>{escape(model)}</td><td>{escape(control)}</td><td>{escape(variant)}</td>"
                            "<td colspan=3 class=muted>not enough ratings yet</td></tr>")
                continue
            low, high = test["interval"]
            verdict = ("B is better" if test["p_value"] < 0.05 and test["difference"] > 0 else
                       "B is worse" if test["p_value"] < 0.05 else "no real difference yet")
            if test["p_value"] < 0.05 and test["difference"] < 0:
                alerts.append(f"{model}: variant {variant} gets fewer thumbs-up than {control} "
                              f"({test['difference']:+.1%}, p={test['p_value']:.3g})")
            rows.append(f"<tr><td>{escape(model)}</td><td>{escape(control)} ({counts[control][0]}/{counts[control][1]})"
                        f"</td><td>{escape(variant)} ({counts[variant][0]}/{counts[variant][1]})</td><td class=n>"
                        f"{test['difference']:+.1%} [{low:+.1%}, {high:+.1%}]</td><td class=n>{test['p_value']:.3g}"
                        f"</td><td>{verdict}</td></tr>")
    if not rows:
        return "<p class=muted>No model name was answered by two variants (no --split traffic).</p>"
    return ("<h3>A/B: does variant B get more thumbs-up than A?</h3><table><tr><th>model</th><th>A (control: "
            "busiest)</th><th>B</th><th>B - A [95% Newcombe]</th><th>p (two-proportion z)</th><th>verdict</th></tr>"
            + "".join(rows) + "</table>")


def _preferences(answered: list[dict], feedback: list[dict]) -> str:
    variant = {r["id"]: r["variant"] for r in answered}
    wins, games = Counter(), Counter()
    for row in feedback:
        if row["kind"] != "pairwise":
            continue
        pair = [variant.get(row["request_id"]), variant.get(row["other_request_id"])]
        for name in pair:
            games[name] += 1
        if row["preferred_request_id"]:
            wins[variant.get(row["preferred_request_id"])] += 1
    if not games:
        return ""
    rows = "".join(f"<tr><td>{escape(str(n))}</td><td class=n>{games[n]}</td><td class=n>{wins[n]}</td></tr>"
                   for n in sorted(games, key=str))
    return ("<h3>Pairwise preferences</h3><table><tr><th>variant</th><th>compared</th><th>preferred</th></tr>"
            f"{rows}</table>")


def _drift(answered: list[dict], threshold: float, alerts: list[str]) -> str:
    by_run = defaultdict(list)
    for r in answered:
        if r["run_dir"]:
            by_run[r["run_dir"]].append(ms.prompt_text(r))
    sections = ["<h2>Drift of incoming prompts from the training data</h2>",
                f"<p class=muted>A prompt is far when its TF-IDF (character 3-5-gram) cosine similarity to the nearest "
                f"training prompt is below {ms.FAR_SIMILARITY}; the alert fires above {threshold:.0%} far.</p>"]
    rows, curves = [], []
    for run_dir, prompts in sorted(by_run.items()):
        training = ms.training_prompts(Path(run_dir))
        if not training:
            rows.append(f"<tr><td>{escape(Path(run_dir).name)}</td><td colspan=6 class=muted>no data/train.jsonl in "
                        f"{escape(run_dir)}</td></tr>")
            continue
        drift = ms.prompt_drift(prompts, training, ms.training_prompts(Path(run_dir), "validation"), threshold)
        alerts.extend(f"{Path(run_dir).name}: {a}" for a in drift["alerts"])
        curves.append((Path(run_dir).name, drift))
        reference = "-" if drift["reference_share_far"] is None else f"{drift['reference_share_far']:.0%}"
        languages = ", ".join(f"{k} {v}" for k, v in drift["languages"]["incoming"].items()) or "-"
        length_p = "-" if drift["length_p"] is None else f"{drift['length_p']:.2g}"
        rows.append(f"<tr><td>{escape(Path(run_dir).name)}</td><td class=n>{drift['prompts']}</td><td class=n>"
                    f"<b>{drift['share_far']:.0%}</b></td><td class=n>{reference}</td><td class=n>"
                    f"{drift['median_length']:.0f} vs {drift['training_median_length']:.0f} (KS p {length_p})</td>"
                    f"<td>{escape(languages)} (training mostly {drift['languages']['main']})</td><td>"
                    f"{'ALERT' if drift['alerts'] else 'ok'}</td></tr>")
    if not rows:
        return sections[0] + "<p class=muted>No answered requests with a run directory.</p>"
    if curves:
        figure, axes = plt.subplots(1, len(curves), figsize=(min(12, 4.5 * len(curves)), 2.8), squeeze=False)
        for axis, (name, drift) in zip(axes[0], curves, strict=True):
            bins = [i / 20 for i in range(21)]
            axis.hist(drift["reference"], bins=bins, alpha=0.6, color=COLORS[0], density=True, label="held-out")
            axis.hist(drift["nearest"], bins=bins, alpha=0.6, color=COLORS[1], density=True, label="incoming")
            axis.axvline(ms.FAR_SIMILARITY, color=COLORS[3], linestyle="--", linewidth=1)
            axis.set_title(name, fontsize=9)
            axis.set_xlabel("similarity to nearest training prompt")
            axis.legend(frameon=False, fontsize=7)
        sections.append(_png(figure))
    sections.append("<table><tr><th>run</th><th>prompts</th><th>far</th><th>far (held-out)</th><th>median length "
                    "(chars) vs training</th><th>languages</th><th></th></tr>" + "".join(rows) + "</table>")
    return "".join(sections)


def _pii(requests: list[dict]) -> str:
    kinds = Counter()
    with_pii = 0
    for r in requests:
        if r["pii"]:
            with_pii += 1
            kinds.update(r["pii"])
    if not kinds:
        return "<h2>PII</h2><p class=muted>No PII found in stored prompts or replies.</p>"
    redacted = sum(1 for r in requests if r["pii"] and r["redacted"])
    rows = "".join(f"<tr><td>{escape(k)}</td><td class=n>{n}</td></tr>" for k, n in kinds.most_common())
    return (f"<h2>PII</h2><p>{with_pii} requests ({with_pii / len(requests):.1%}) held PII; {redacted} of them were "
            f"stored redacted.</p><table><tr><th>kind</th><th>found</th></tr>{rows}</table>")


def _thumbs_down(answered: list[dict], feedback: list[dict], shown: int = 10) -> str:
    by_id = {r["id"]: r for r in answered}
    downs: dict[str, list[dict]] = defaultdict(list)
    corrections = {}
    for row in feedback:
        if row["kind"] == "rating" and row["score"] is not None and row["score"] < 0.5 and row["request_id"] in by_id:
            prompt = ms.prompt_text(by_id[row["request_id"]]).strip()
            downs[prompt].append(by_id[row["request_id"]])
            if row["correction"]:
                corrections[prompt] = row["correction"]
    if not downs:
        return "<h2>Most thumbs-down prompts</h2><p class=muted>No thumbs-down yet.</p>"
    ranked = sorted(downs.items(), key=lambda item: -len(item[1]))[:shown]
    rows = "".join(
        f"<tr><td class=n>{len(hits)}</td><td><span class=ex>{escape(prompt[:300])}</span></td>"
        f"<td>{escape(', '.join(sorted({str(h['variant']) for h in hits})))}</td><td><span class=ex>"
        f"{escape((hits[-1]['reply'] or '')[:300])}</span></td>"
        f"<td>{escape(corrections.get(prompt, '')[:300])}</td></tr>"
        for prompt, hits in ranked)
    return ("<h2>Most thumbs-down prompts</h2><table><tr><th>downs</th><th>prompt</th><th>variants</th>"
            f"<th>last reply</th><th>correction</th></tr>{rows}</table>")
