"""Render an audit report as one self-contained HTML page: summary first, then each check with examples and charts.

Charts are inline SVG, so the file opens anywhere with no network and no scripts.
"""

from __future__ import annotations

from html import escape

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:70rem;color:#1d232b;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #dde2e8}
table{border-collapse:collapse;margin:.5rem 0}
td,th{padding:.25rem .6rem;border-bottom:1px solid #eef1f4;text-align:left;vertical-align:top}
th{color:#5b6673;font-weight:600}.error{color:#b42318}.warning{color:#a15c07}.info{color:#1f5fae}
.sev{font-weight:700;text-transform:uppercase;font-size:.75rem;letter-spacing:.05em}
code,.ex{font:13px ui-monospace,monospace}
.ex{background:#f6f8fa;padding:.15rem .35rem;border-radius:4px;white-space:pre-wrap;word-break:break-word}
.muted{color:#5b6673}.ok{color:#137333}svg text{font:11px system-ui,sans-serif;fill:#444}
"""


def render_audit_html(report: dict, title: str = "Data audit") -> str:
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>",
             f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>", _files_line(report), _summary(report)]
    if "lengths" in report:
        parts.append(_lengths(report["lengths"]))
    if "labels" in report:
        parts.append(_labels(report["labels"]))
    if "duplicates" in report:
        parts.append(_duplicates(report["duplicates"]))
    if report.get("leakage"):
        parts.append(_leakage(report["leakage"]))
    if "pii" in report:
        parts.append(_pii(report["pii"]))
    if "language" in report:
        parts.append(_language(report["language"]))
    if "bias" in report:
        parts.append(_bias(report["bias"]))
    if "preference" in report:
        parts.append(_preference(report["preference"]))
    parts.append(_files(report["files"]))
    parts.append("</body></html>")
    return "".join(parts)


def _files_line(report: dict) -> str:
    described = ", ".join(f"<code>{escape(f['path'])}</code> ({f['role']}, {f['valid_rows']:,} rows)"
                          for f in report["files"])
    return f"<p class=muted>{described}</p>"


def _summary(report: dict) -> str:
    if not report["summary"]:
        return "<h2>Summary</h2><p class=ok>No problems found.</p>"
    rows = "".join(
        f"<tr><td class='sev {item['severity']}'>{item['severity']}</td><td>{escape(item['check'])}</td>"
        f"<td>{escape(item['message'])}</td></tr>"
        for item in report["summary"]
    )
    return f"<h2>Summary</h2><table><tr><th></th><th>check</th><th>finding</th></tr>{rows}</table>"


def _section(title: str, body: str) -> str:
    return f"<h2>{escape(title)}</h2>{body}"


def _ex(text: object) -> str:
    return f"<span class=ex>{escape(str(text))}</span>"


def _lengths(lengths: dict) -> str:
    histogram = lengths["histogram"]
    labels = [f"{histogram['start'] + i * histogram['width']}" for i in range(len(histogram["counts"]))]
    stats = (f"min {lengths['min']}, median {lengths['median']}, p95 {lengths['p95']}, max {lengths['max']} "
             f"{escape(lengths['unit'])}")
    if "truncated_rows" in lengths:
        stats += f"; {lengths['truncated_rows']} row(s) over max_length {lengths['max_length']}"
    return _section("Lengths", f"<p>{stats}</p>" + bar_chart(labels, histogram["counts"], "rows per length bin"))


def _labels(labels: dict) -> str:
    distribution = labels["distribution"]
    shown = list(distribution.items())[:40]
    chart = bar_chart([k for k, _ in shown], [v for _, v in shown], "rows per label", rotate=True)
    note = f"<p>{labels['classes']} classes, imbalance ratio {labels['imbalance_ratio']}:1" + (
        f" (first 40 of {len(distribution)} shown)" if len(distribution) > 40 else "") + "</p>"
    return _section("Labels", note + chart)


def _duplicates(duplicates: dict) -> str:
    exact, near = duplicates["exact"], duplicates["near"]
    body = f"<p>{exact['duplicate_rows']} exact duplicate row(s) ({escape(duplicates['normalization'])}).</p>"
    body += "".join(
        "<p>" + " = ".join(f"{_ex(m['text'])} <span class=muted>{escape(m['where'])}</span>" for m in group) + "</p>"
        for group in exact["examples"]
    )
    body += f"<p>{near['pairs']} near-duplicate pair(s) at Jaccard ≥ {near['threshold']}:</p>"
    body += _pairs_table(near["examples"], "a", "b")
    return _section("Duplicates", body)


def _pairs_table(examples: list[dict], left: str, right: str) -> str:
    if not examples:
        return ""
    rows = "".join(
        f"<tr><td>{ex.get('similarity', 1.0)}</td><td>{_ex(ex[left]['text'])}<br><span class=muted>"
        f"{escape(ex[left]['where'])}</span></td><td>{_ex(ex[right]['text'])}<br><span class=muted>"
        f"{escape(ex[right]['where'])}</span></td></tr>"
        for ex in examples
    )
    return f"<table><tr><th>similarity</th><th>{left}</th><th>{right}</th></tr>{rows}</table>"


def _leakage(leakage: dict) -> str:
    body = ""
    for path, found in leakage.items():
        body += (f"<h3><code>{escape(path)}</code></h3><p>{found['exact']['rows']} of {found['rows']} row(s) "
                 f"identical to a training row; {found['near']['rows']} more near-identical.</p>")
        body += _pairs_table(found["exact"]["examples"], "eval", "train")
        body += _pairs_table(found["near"]["examples"], "eval", "train")
    return _section("Leakage into evaluation files", body)


def _pii(pii: dict) -> str:
    kinds = ", ".join(f"{kind}: {count}" for kind, count in pii["by_kind"].items()) or "none"
    rows = "".join(f"<tr><td>{escape(ex['kind'])}</td><td>{_ex(ex['context'])}</td><td class=muted>"
                   f"{escape(ex['where'])}</td></tr>" for ex in pii["examples"])
    table = f"<table><tr><th>kind</th><th>context (redacted)</th><th>where</th></tr>{rows}</table>" if rows else ""
    return _section("Personal data", f"<p>{pii['rows_with_pii']} row(s) with personal data ({kinds}).</p>{table}")


def _language(language: dict) -> str:
    distribution = ", ".join(f"{code}: {count}" for code, count in list(language["distribution"].items())[:12])
    rows = "".join(f"<tr><td>{escape(ex['language'])}</td><td>{_ex(ex['text'])}</td><td class=muted>"
                   f"{escape(ex['where'])}</td></tr>" for ex in language["unexpected_examples"])
    table = f"<table><tr><th>language</th><th>text</th><th>where</th></tr>{rows}</table>" if rows else ""
    return _section("Language", f"<p>Expected <code>{escape(language['expected'])}</code>; found {distribution}."
                                f"</p>{table}")


def _bias(bias: dict) -> str:
    overall = "".join(
        f"<tr><td>{escape(group)}</td><td>"
        + ", ".join(f"{escape(term)}: {count}" for term, count in counts["overall"].items())
        + "</td></tr>"
        for group, counts in bias.get("term_groups", {}).items()
    )
    flags = "".join(f"<li>{escape(flag['message'])}</li>" for flag in bias.get("flags", []))
    body = f"<table><tr><th>term group</th><th>rows mentioning</th></tr>{overall}</table>"
    body += f"<ul>{flags}</ul>" if flags else "<p class=ok>No skew flagged.</p>"
    return _section("Bias screen", body)


def _preference(preference: dict) -> str:
    rows = "".join(f"<tr><td>{ex['similarity']}</td><td>{_ex(ex['chosen'])}</td><td>{_ex(ex['rejected'])}</td>"
                   f"<td class=muted>{escape(ex['where'])}</td></tr>" for ex in preference["examples"])
    table = (f"<table><tr><th>similarity</th><th>chosen (end)</th><th>rejected (end)</th><th>where</th></tr>"
             f"{rows}</table>") if rows else ""
    return _section("Preference pairs", f"<p>{preference['pairs']} pairs: {preference['identical_pairs']} identical, "
                                        f"{preference['near_identical_pairs']} near-identical.</p>{table}")


def _files(files: list[dict]) -> str:
    rows = "".join(
        f"<tr><td><code>{escape(f['path'])}</code></td><td>{f['role']}</td><td>{f['format']}</td><td>{f['rows']:,}</td>"
        f"<td>{f['invalid_rows']}</td><td>{'<br>'.join(_ex(x) for x in f['invalid_examples'])}</td></tr>"
        for f in files
    )
    return _section("Files", "<table><tr><th>file</th><th>role</th><th>format</th><th>rows</th><th>invalid</th>"
                             f"<th>invalid examples</th></tr>{rows}</table>")


def bar_chart(labels: list[str], values: list[float], title: str, rotate: bool = False, width: int = 900) -> str:
    """A plain SVG bar chart; labels under the bars (rotated when there are many)."""
    if not values:
        return ""
    height, bottom, left = 220, 110 if rotate else 30, 40
    top = max(values) or 1
    step = (width - left) / len(values)
    bars = []
    for i, (label, value) in enumerate(zip(labels, values, strict=True)):
        x = left + i * step
        h = (height - 20) * value / top
        bars.append(f"<rect x='{x + 1:.1f}' y='{height - h:.1f}' width='{max(step - 2, 1):.1f}' height='{h:.1f}' "
                    f"fill='#4c78a8'><title>{escape(label)}: {value}</title></rect>")
        if rotate:
            bars.append(f"<text transform='translate({x + step / 2:.1f},{height + 6}) rotate(60)'>"
                        f"{escape(label[:18])}</text>")
        elif len(values) <= 25 or i % max(1, len(values) // 12) == 0:
            bars.append(f"<text x='{x + step / 2:.1f}' y='{height + 16}' text-anchor='middle'>{escape(label)}</text>")
    axis = (f"<text x='0' y='14'>{top:g}</text><text x='0' y='{height}'>0</text>"
            f"<line x1='{left}' y1='{height}' x2='{width}' y2='{height}' stroke='#999'/>")
    return (f"<figure><svg width='{width}' height='{height + bottom}' role=img aria-label='{escape(title)}'>"
            f"{axis}{''.join(bars)}</svg><figcaption class=muted>{escape(title)}</figcaption></figure>")
