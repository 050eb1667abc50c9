"""Render a review sheet: one self-contained HTML page with each held-out prompt, its reference, and the baseline
and tuned answers side by side, so a person can read 20 examples in two minutes.

Each card marks whether an answer contains the row's expected `answer` (when the data has one) and shows the
judge's verdict (when a judge result is given). Everything is escaped; no scripts, no external resources.
"""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from pathlib import Path

from tuneloop.data.text_match import contains_answer
from tuneloop.errors import TuneloopError
from tuneloop.evaluate.judge import JUDGE_FILE
from tuneloop.workspace import RunDir, read_json, read_jsonl, write_text

REVIEW_FILE = "review.html"
DEFAULT_LIMIT = 20

_STYLE = """
body{font:13px/1.4 system-ui,sans-serif;margin:1.2rem auto;max-width:78rem;color:#1d232b;padding:0 1rem}
h1{font-size:1.3rem;margin:0 0 .3rem}.summary{margin:.1rem 0;color:#3d4650}
.card{border:1px solid #dde2e8;border-radius:6px;padding:.5rem .7rem;margin:.7rem 0}
.head{display:flex;gap:.6rem;align-items:baseline;margin-bottom:.25rem}.num{font-weight:700;color:#5b6673}
.label{font-size:11px;font-weight:700;text-transform:uppercase;letter-spacing:.04em;color:#5b6673;margin-right:.4rem}
.text{white-space:pre-wrap;word-break:break-word;max-height:13em;overflow:auto}
.turn{margin:.15rem 0}.turn .text{font-weight:600}
details.system{color:#8a94a0;font-size:12px}details.system summary{cursor:pointer}
.ref{background:#f6f8fa;border-radius:4px;padding:.25rem .45rem;margin:.3rem 0}
.expected{font-weight:700}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:.6rem}
.col{border-top:2px solid #dde2e8;padding-top:.2rem}.col.tuned{border-top-color:#4c78a8}
.missing{color:#8a94a0;font-style:italic}
.hit{color:#137333;font-weight:700}.miss{color:#b42318;font-weight:700}
.verdict{font-size:12px;font-weight:700;padding:0 .4rem;border-radius:3px}
.win{background:#e6f4ea;color:#137333}.loss{background:#fce8e6;color:#b42318}
.tie{background:#eef1f4;color:#3d4650}.invalid{background:#fef7e0;color:#a15c07}
.inconsistent{font-size:12px;color:#a15c07}
"""


def render_review_sheet(samples: list[dict], title: str, judge: dict | None = None,
                        limit: int | None = DEFAULT_LIMIT) -> str:
    """The review page for the first `limit` samples (all when None).

    `samples` are samples.jsonl rows (prompt, reference, optional answer, baseline, tuned); `judge` is what
    `judge_run` returned for the same samples, its `rows[i]` judging sample i.
    """
    shown = samples[:limit]
    judged_rows = judge.get("rows", []) if judge else []
    cards = [
        _card(number, sample, judged_rows[number - 1] if number <= len(judged_rows) else None, judge or {})
        for number, sample in enumerate(shown, start=1)
    ]
    return "".join([
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{escape(title)}</title>",
        f"<style>{_STYLE}</style></head><body><h1>{escape(title)}</h1>",
        _summary(samples, len(shown), judge),
        *cards,
        "</body></html>",
    ])


def write_review_sheet(run_dir: str | Path, limit: int | None = DEFAULT_LIMIT, judge: dict | None = None) -> Path:
    """Write review.html into the run directory from its samples.jsonl; returns its path.

    Without `judge`, the run's judge.json is used when there is one.
    """
    run = RunDir(Path(run_dir))
    if not run.samples.is_file():
        raise TuneloopError(
            f"{run.samples}: not found. The evaluate stage writes it; run `tuneloop evaluate` on {run_dir} first."
        )
    if judge is None and (run.root / JUDGE_FILE).is_file():
        judge = read_json(run.root / JUDGE_FILE)
    title = f"Review: {run.root.resolve().name}"
    path = run.root / REVIEW_FILE
    write_text(path, render_review_sheet(read_jsonl(run.samples), title, judge, limit))
    return path


# ---------------------------------------------------------------- header


def _summary(samples: list[dict], shown: int, judge: dict | None) -> str:
    lines = [f"Showing {shown} of {len(samples)} held-out example(s)."]
    with_answer = [sample for sample in samples if sample.get("answer")]
    if with_answer:
        found = ", ".join(
            f"{side} {_count_containing(with_answer, side)}/{len(with_answer)}" for side in ("baseline", "tuned")
        )
        lines.append(f"Expected answer found (all rows with one): {found}.")
    if judge:
        lines.append(_judge_summary(judge))
    return "".join(f"<p class=summary>{escape(line)}</p>" for line in lines)


def _count_containing(samples: list[dict], side: str) -> int:
    return sum(_contains(sample.get(side), sample["answer"]) is True for sample in samples)


def _judge_summary(judge: dict) -> str:
    first, second = judge.get("first", "tuned"), judge.get("second", "baseline")
    counts = (f"Judge ({judge.get('judge', 'unknown')}), {first} vs {second}: {judge.get('win', 0)} win(s), "
              f"{judge.get('tie', 0)} tie(s), {judge.get('loss', 0)} loss(es), {judge.get('invalid', 0)} without a "
              f"verdict; {judge.get('inconsistent', 0)} where the two orders disagreed.")
    if judge.get("win_rate") is None:
        return counts
    low, high = judge.get("win_rate_interval") or (judge["win_rate"], judge["win_rate"])
    confidence = round(100 * judge.get("confidence", 0.95))
    return f"{counts} Win rate {judge['win_rate']:.2f} ({confidence}% interval {low:.2f}-{high:.2f})."


# ---------------------------------------------------------------- one example


def _card(number: int, sample: dict, judged: dict | None, judge: dict) -> str:
    expected = sample.get("answer")
    return (
        f"<section class=card><div class=head><span class=num>#{number}</span>{_verdict(judged, judge)}</div>"
        f"{_prompt(sample.get('prompt', ''))}{_reference(sample.get('reference'), expected)}"
        f"<div class=cols>{_answer('baseline', sample.get('baseline'), expected)}"
        f"{_answer('tuned', sample.get('tuned'), expected)}</div></section>"
    )


def _verdict(judged: dict | None, judge: dict) -> str:
    if not judged:
        return ""
    first, second = judge.get("first", "tuned"), judge.get("second", "baseline")
    outcome = judged.get("outcome", "invalid")
    words = {"win": f"{first} better", "loss": f"{second} better", "tie": "tie"}.get(outcome, "no verdict")
    badge = f"<span class='verdict {escape(outcome)}'>judge: {escape(words)}</span>"
    if judged.get("inconsistent"):
        badge += "<span class=inconsistent>the two orders disagreed</span>"
    return badge


def _prompt(prompt: str | Sequence[dict]) -> str:
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    parts = []
    for message in messages:
        role, content = str(message.get("role", "user")), str(message.get("content", ""))
        if role == "system":
            parts.append(f"<details class=system><summary>system</summary><div class=text>{escape(content)}</div>"
                         "</details>")
        else:
            parts.append(f"<div class=turn><span class=label>{escape(role)}</span><span class=text>"
                         f"{escape(content)}</span></div>")
    return "".join(parts)


def _reference(reference: str | None, expected: str | None) -> str:
    if not reference and not expected:
        return ""
    body = f"<span class=label>reference</span><span class=text>{escape(str(reference or ''))}</span>"
    if expected:
        body += f" <span class=label>expected</span><span class=expected>{escape(str(expected))}</span>"
    return f"<div class=ref>{body}</div>"


def _answer(side: str, text: str | None, expected: str | None) -> str:
    header = f"<span class=label>{side}</span>{_marker(_contains(text, expected))}"
    if text is None:
        body = f"<div class=missing>no {side} answer in this run</div>"
    else:
        body = f"<div class=text>{escape(text)}</div>"
    return f"<div class='col {side}'>{header}{body}</div>"


def _contains(text: str | None, expected: str | None) -> bool | None:
    """Whether the answer holds the expected answer; None when there is no answer or nothing to look for."""
    if text is None or not expected:
        return None
    return contains_answer([text], [str(expected)])[0] == 1.0


def _marker(found: bool | None) -> str:
    if found is None:
        return ""
    return "<span class=hit>✓ has answer</span>" if found else "<span class=miss>✗ no answer</span>"
