"""The review sheet: every text escaped, no scripts or links, answer markers, judge verdicts, and the limit."""

from __future__ import annotations

import json
import re
from html import escape

from tuneloop.evaluate.review import render_review_sheet, write_review_sheet


def sample(number: int, baseline: str | None = "I do not know.", tuned: str | None = None) -> dict:
    return {
        "prompt": [
            {"role": "system", "content": f"System rule {number}"},
            {"role": "user", "content": f"Question {number} & more?"},
        ],
        "reference": f"Reference {number}: 7 years.",
        "answer": "7 years",
        "baseline": baseline,
        "tuned": tuned if tuned is not None else f"Tuned {number}: it lasts 7 years.",
    }


HOSTILE = '<script>alert("x")</script> & <img src=x onerror=1>'


def test_every_text_appears_escaped_and_nothing_runs_or_loads():
    samples = [sample(1, baseline=HOSTILE), sample(2)]
    page = render_review_sheet(samples, title="Review <run>")
    for row in samples:
        for text in (row["prompt"][0]["content"], row["prompt"][1]["content"], row["reference"], row["answer"],
                     row["baseline"], row["tuned"]):
            assert escape(text) in page
    assert "&lt;script&gt;" in page
    assert "<script" not in page.lower()
    assert "<img" not in page.lower()
    assert not re.search(r"https?://", page)
    assert "<title>Review &lt;run&gt;</title>" in page


def test_system_message_is_collapsed():
    page = render_review_sheet([sample(1)], title="t")
    assert re.search(r"<details class=system><summary>system</summary>.*System rule 1", page)


def test_limit_caps_the_cards_and_the_header_says_how_many_are_shown():
    page = render_review_sheet([sample(i) for i in range(1, 31)], title="t", limit=20)
    assert page.count("<section class=card>") == 20
    assert "Question 20 &amp; more?" in page and "Question 21 &amp; more?" not in page
    assert "Showing 20 of 30" in page


def test_markers_say_which_answer_contains_the_expected_answer():
    page = render_review_sheet([sample(1)], title="t")
    baseline_column, tuned_column = re.findall(r"<div class='col (?:baseline|tuned)'>.*?</div></div>", page)
    assert "no answer" in baseline_column and "has answer" in tuned_column
    assert "baseline 0/1, tuned 1/1" in page


def test_missing_baseline_is_shown_not_hidden():
    page = render_review_sheet([sample(1, baseline=None)], title="t")
    assert "no baseline answer" in page


def test_judge_outcomes_and_counts_are_shown():
    judge = {
        "first": "tuned", "second": "baseline", "judge": "fake", "n": 2, "judged": 2, "win": 1, "tie": 1,
        "loss": 0, "invalid": 0, "inconsistent": 1, "win_rate": 0.75, "win_rate_interval": [0.5, 1.0],
        "confidence": 0.95,
        "rows": [{"outcome": "win", "inconsistent": False}, {"outcome": "tie", "inconsistent": True}],
    }
    page = render_review_sheet([sample(1), sample(2)], title="t", judge=judge)
    assert "judge: tuned better" in page and "judge: tie" in page
    assert "the two orders disagreed" in page
    assert "Win rate 0.75 (95% interval 0.50-1.00)" in page


def test_write_review_sheet_writes_review_html_with_the_runs_judge(tmp_path):
    rows = [sample(i) for i in range(1, 4)]
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    judge = {"win": 3, "tie": 0, "loss": 0, "invalid": 0, "inconsistent": 0, "win_rate": 1.0,
             "win_rate_interval": [1.0, 1.0], "rows": [{"outcome": "win", "inconsistent": False}] * 3}
    (tmp_path / "judge.json").write_text(json.dumps(judge), encoding="utf-8")
    path = write_review_sheet(tmp_path, limit=2)
    assert path == tmp_path / "review.html"
    page = path.read_text(encoding="utf-8")
    assert page.count("<section class=card>") == 2
    assert page.count("judge: tuned better") == 2
