"""The promotion gate's decision on constructed score sets."""

from __future__ import annotations

import pytest

from tuneloop.feedback.gate import GateCheck, GateRule, decide


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
    checks = [frozen(right_wrong(40, 60), right_wrong(40, 60)), feedback(right_wrong(0, 10), right_wrong(2, 10))]
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
