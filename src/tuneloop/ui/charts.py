"""SVG line and bar charts drawn on the server (no JavaScript library): loss curves and run comparisons."""

from __future__ import annotations

import math
from html import escape

COLORS = ("#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#9d755d")


def _ticks(low: float, high: float, count: int = 4) -> list[float]:
    if high <= low:
        return [low]
    step = (high - low) / count
    return [low + step * i for i in range(count + 1)]


def _label(value: float) -> str:
    return f"{value:.3g}"


def line_chart(series: dict[str, list[tuple[float, float]]], x_label: str = "step", y_label: str = "loss",
               width: int = 640, height: int = 260, empty: str = "no points yet") -> str:
    """One SVG with a polyline per series; data attributes carry each series' point count (tests read them)."""
    points = [p for values in series.values() for p in values if math.isfinite(p[1])]
    counts = " ".join(f'data-{escape(name.replace(" ", "-"))}-points="{len(values)}"'
                      for name, values in series.items())
    left, right, top, bottom = 56, 16, 30, 40  # the legend sits above the plot area
    head = (f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'aria-label="{escape(y_label)} by {escape(x_label)}" {counts}>')
    if not points:
        return head + f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" class="muted">{escape(empty)}' \
                      "</text></svg>"
    x_low, x_high = min(p[0] for p in points), max(p[0] for p in points)
    y_low, y_high = min(p[1] for p in points), max(p[1] for p in points)
    if x_high == x_low:
        x_high = x_low + 1
    if y_high == y_low:
        y_high, y_low = y_high + 0.5, y_low - 0.5

    def x_of(x: float) -> float:
        return left + (x - x_low) / (x_high - x_low) * (width - left - right)

    def y_of(y: float) -> float:
        return top + (y_high - y) / (y_high - y_low) * (height - top - bottom)

    parts = [head]
    for tick in _ticks(y_low, y_high):
        y = y_of(tick)
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>'
                     f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{_label(tick)}</text>')
    for tick in _ticks(x_low, x_high):
        parts.append(f'<text x="{x_of(tick):.1f}" y="{height - bottom + 16}" text-anchor="middle" class="tick">'
                     f'{tick:.0f}</text>')
    parts.append(f'<text x="{(left + width - right) / 2}" y="{height - 6}" text-anchor="middle" class="axis">'
                 f'{escape(x_label)}</text>')
    for index, (name, values) in enumerate(series.items()):
        color = COLORS[index % len(COLORS)]
        shown = [(x, y) for x, y in values if math.isfinite(y)]
        if not shown:
            continue
        path = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in shown)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2" class="series"/>')
        if len(shown) < 40:  # sparse series (validation loss): show each point
            parts += [f'<circle cx="{x_of(x):.1f}" cy="{y_of(y):.1f}" r="3" fill="{color}"/>' for x, y in shown]
        parts.append(f'<rect x="{left + 10 + 150 * index}" y="8" width="14" height="4" fill="{color}"/>'
                     f'<text x="{left + 30 + 150 * index}" y="14" class="legend">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def bar_chart(groups: list[str], series: dict[str, list[float | None]], width: int = 1080, height: int = 280) -> str:
    """Grouped bars: one group per metric, one bar per run (the compare view)."""
    values = [v for vs in series.values() for v in vs if v is not None]
    if not groups or not values:
        return '<p class="muted">Nothing to chart: no run has held-out metrics yet.</p>'
    left, right, top, bottom = 48, 16, 28, 48
    high = max(max(values), 0) or 1.0
    low = min(min(values), 0)
    group_width = (width - left - right) / len(groups)
    bar = group_width * 0.8 / max(len(series), 1)

    def y_of(v: float) -> float:
        return top + (high - v) / (high - low) * (height - top - bottom)

    parts = [f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
             'aria-label="tuned metrics per run">']
    for tick in _ticks(low, high):
        parts.append(f'<line x1="{left}" x2="{width - right}" y1="{y_of(tick):.1f}" y2="{y_of(tick):.1f}" '
                     f'class="grid"/><text x="{left - 6}" y="{y_of(tick) + 4:.1f}" text-anchor="end" class="tick">'
                     f'{_label(tick)}</text>')
    for g, group in enumerate(groups):
        x0 = left + g * group_width + group_width * 0.1
        for s, (name, vs) in enumerate(series.items()):
            value = vs[g]
            if value is None:
                continue
            y, base = y_of(max(value, 0)), y_of(min(value, 0))
            parts.append(f'<rect x="{x0 + s * bar:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" height="{base - y:.1f}" '
                         f'fill="{COLORS[s % len(COLORS)]}"><title>{escape(name)} {escape(group)}: {value:.2f}'
                         '</title></rect>')
        parts.append(f'<text x="{x0 + group_width * 0.4:.1f}" y="{height - bottom + 16}" text-anchor="middle" '
                     f'class="tick">{escape(group)}</text>')
    for s, name in enumerate(series):
        parts.append(f'<rect x="{left + 10 + 150 * s}" y="8" width="12" height="10" fill="{COLORS[s % len(COLORS)]}"/>'
                     f'<text x="{left + 26 + 150 * s}" y="17" class="legend">{escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)
