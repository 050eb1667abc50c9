"""The promotion gate's decision on constructed score sets."""

from __future__ import annotations

import pytest

from tuneloop.feedback.gate import MIN_FEEDBACK_ROWS, GateCheck, GateRule, decide


def right_wrong(right: int, total: int) -> list[float]:
    return [100.0] * right + [0.0] * (total - right)


def frozen(served, candidate):
    return GateCheck("frozen test", "frozen", "contains_answer", served, candidate)


def feedback(served, candidate):
    return GateCheck("feedback slice", "feedback", "contains_answer", served, candidate)


def test_a_clear_gain_with_no_regression_is_promoted():
    result = decide([frozen(right_wrong(40, 60), right_wrong(40, 60)),
                     feedback(right_wrong(0, 20), right_wrong(15, 20))])
    assert result["decision"] == "promote"
    assert result["checks"]["feedback slice"]["verdict"] == "gained"
    assert result["checks"]["frozen test"]["verdict"] == "held"
    assert result["checks"]["feedback slice"]["difference"] == pytest.approx(75.0)


def test_a_large_drop_on_the_frozen_set_rejects_even_with_a_gain():
    # 41 -> 20 of 60 right: the adversarial case, wrong answers taught over right ones.
    served = right_wrong(41, 60)
    candidate = right_wrong(20, 60)
    result = decide([frozen(served, candidate), feedback(right_wrong(0, 20), right_wrong(15, 20))])
    assert result["decision"] == "reject"
    assert result["checks"]["frozen test"]["verdict"] == "regressed"
    assert any("frozen test" in reason and "-35.0 points" in reason for reason in result["reasons"])


def test_a_small_drop_within_the_allowance_that_is_not_significant_passes():
    # One row of 60 lost (-1.7 points): inside max_regression=2 and far from significant.
    served = right_wrong(41, 60)
    candidate = [0.0] + served[1:]
    result = decide([frozen(served, candidate), feedback(right_wrong(0, 20), right_wrong(15, 20))])
    assert result["decision"] == "promote"
    strict = decide([frozen(served, candidate), feedback(right_wrong(0, 20), right_wrong(15, 20))],
                    GateRule(max_regression=1.0))
    assert strict["decision"] == "reject"


def test_forgetting_files_are_guarded_like_the_frozen_set():
    forgetting = GateCheck("arc-easy", "forgetting", "acc", right_wrong(300, 500), right_wrong(250, 500))
    result = decide([frozen(right_wrong(40, 60), right_wrong(40, 60)), forgetting,
                     feedback(right_wrong(0, 20), right_wrong(15, 20))])
    assert result["decision"] == "reject"
    assert result["checks"]["arc-easy"]["verdict"] == "regressed"


def test_a_gain_too_small_to_be_significant_is_no_gain_unless_the_rule_allows_it():
    # 20 rows: the smallest slice the gate judges at all (see the small-slice tests below).
    checks = [frozen(right_wrong(40, 60), right_wrong(40, 60)), feedback(right_wrong(0, 20), right_wrong(2, 20))]
    assert decide(checks)["decision"] == "reject"
    assert "not significant" in " ".join(decide(checks)["reasons"])
    lenient = decide(checks, GateRule(require_significant_gain=False))
    assert lenient["decision"] == "promote"


def test_no_feedback_slice_means_nothing_to_promote_on():
    result = decide([frozen(right_wrong(40, 60), right_wrong(45, 60)), feedback([], [])])
    assert result["decision"] == "reject"
    assert any("no held-out feedback" in reason for reason in result["reasons"])


def test_checks_must_score_both_models_on_the_same_rows():
    with pytest.raises(ValueError, match="same rows"):
        frozen([100.0, 0.0], [100.0])
    with pytest.raises(ValueError, match="kind"):
        GateCheck("x", "vibes", "acc", [], [])


def test_a_feedback_slice_too_small_to_judge_cannot_promote():
    # 6 of 6 rows gained: McNemar's exact p is 0.031, "significant", yet 6 rows prove nothing about the facts.
    checks = [frozen(right_wrong(40, 60), right_wrong(40, 60)), feedback(right_wrong(0, 6), right_wrong(6, 6))]
    result = decide(checks)
    assert result["decision"] == "reject"
    assert result["checks"]["feedback slice"]["verdict"] == "too small"
    assert result["checks"]["feedback slice"]["n"] == 6 and result["checks"]["feedback slice"]["difference"] == 100
    assert result["reasons"] == [result["reasons"][0]]
    assert result["reasons"][0].startswith("feedback slice of 6 rows is too small to judge; its +100.0 points are "
                                           "no evidence of a gain: at least 20 held-out feedback rows")
    assert result["rule"]["min_feedback_rows"] == MIN_FEEDBACK_ROWS == 20
    # The same rows judged under a rule that accepts 6: the old behaviour, a promotion.
    assert decide(checks, GateRule(min_feedback_rows=6))["decision"] == "promote"


def test_the_guarded_checks_still_judge_beside_a_small_slice():
    result = decide([frozen(right_wrong(41, 60), right_wrong(20, 60)),
                     feedback(right_wrong(0, 19), right_wrong(19, 19))])
    assert result["decision"] == "reject"
    assert result["checks"]["frozen test"]["verdict"] == "regressed"
    assert len(result["reasons"]) == 2 and any("too small to judge" in reason for reason in result["reasons"])
    at_the_limit = decide([frozen(right_wrong(40, 60), right_wrong(40, 60)),
                           feedback(right_wrong(0, 20), right_wrong(15, 20))])
    assert at_the_limit["decision"] == "promote"
