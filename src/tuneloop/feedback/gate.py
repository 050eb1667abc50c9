"""The promotion gate: may a retrained model replace the one in service? A decision with the paired tests behind it.

Both models are scored on the same rows. A candidate is promoted only when:
- it does not regress on the frozen held-out set of the original run, nor on any forgetting file: its mean
  score may not fall by more than `max_regression` points, nor fall by a significant amount (paired test,
  p < 0.05) however small;
- and it gains on the held-out slice of the feedback: higher by more than `min_gain` points and, unless
  `require_significant_gain` is off, significantly so (a gain the test cannot tell from noise is no gain).
Anything else is a rejection, with every reason listed. With no feedback slice there is nothing to show a
gain on, so the gate rejects and says so. A slice of fewer than `min_feedback_rows` (MIN_FEEDBACK_ROWS) rows is
too small to judge: it is scored and recorded, but its verdict is "too small" and it is no evidence of a gain,
so it cannot promote a candidate; the frozen set and forgetting checks still judge and report regressions.

Scores are per row on a 0-100 scale (a right/wrong metric is 0 or 100 per row), so differences are points.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from tuneloop.evaluate.stats import compare

GUARDED_KINDS = ("frozen", "forgetting")  # must not regress
GAIN_KINDS = ("feedback",)  # must improve
# Fewer held-out feedback rows than this prove nothing: measured, the gate promoted on a 6-row slice while unseen
# paraphrases of the corrected facts went only 0.00 -> 0.13; on so few rows a paired test's interval is
# unreliable. At the default --holdout 0.2 this asks for about 100 corrected prompts before a promotion.
MIN_FEEDBACK_ROWS = 20


@dataclass(frozen=True)
class GateRule:
    """The thresholds of the gate; the defaults are what `tuneloop retrain` uses."""

    max_regression: float = 2.0
    min_gain: float = 0.0
    require_significant_gain: bool = True
    min_feedback_rows: int = MIN_FEEDBACK_ROWS


@dataclass
class GateCheck:
    """One set of rows scored for both models: kind is frozen, forgetting or feedback."""

    name: str
    kind: str
    metric: str
    served: Sequence[float]
    candidate: Sequence[float]
    result: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in GUARDED_KINDS + GAIN_KINDS:
            raise ValueError(f"gate check {self.name!r}: kind must be one of {GUARDED_KINDS + GAIN_KINDS}")
        if len(self.served) != len(self.candidate):
            raise ValueError(f"gate check {self.name!r}: {len(self.served)} served scores but "
                             f"{len(self.candidate)} candidate scores; both models must be scored on the same rows")


def decide(checks: list[GateCheck], rule: GateRule = GateRule()) -> dict:
    """The gate's decision: {"decision": "promote"|"reject", "reasons": [...], "checks": {...}, "rule": {...}}."""
    reasons: list[str] = []
    results = {}
    for check in checks:
        verdict, reason = _judge(check, rule)
        results[check.name] = {**check.result, "verdict": verdict}
        if reason:
            reasons.append(reason)
    if not any(check.kind in GAIN_KINDS and check.served for check in checks):
        reasons.append("no held-out feedback rows to show a gain on: collect more feedback before retraining")
    decision = "reject" if reasons else "promote"
    if decision == "promote":
        reasons = ["no regression on the frozen set or the forgetting files, and a gain on the held-out feedback"]
    return {"decision": decision, "reasons": reasons, "checks": results, "rule": asdict(rule)}


def _judge(check: GateCheck, rule: GateRule) -> tuple[str, str | None]:
    served, candidate = list(map(float, check.served)), list(map(float, check.candidate))
    if not served:
        check.result = {"kind": check.kind, "metric": check.metric, "n": 0}
        return "empty", None
    test = compare(served, candidate)
    check.result = {
        "kind": check.kind, "metric": check.metric, "n": len(served),
        "served": sum(served) / len(served), "candidate": sum(candidate) / len(candidate),
        "difference": test["difference"], "low": test["low"], "high": test["high"],
        "p_value": test["p_value"], "test": test["test"],
    }
    difference, significant = test["difference"], test["significant"]
    where = f"{check.name} ({check.metric}, {len(served)} rows)"
    if check.kind in GAIN_KINDS and len(served) < rule.min_feedback_rows:
        return "too small", (f"{check.name} of {len(served)} rows is too small to judge; its "
                             f"{_points(difference)} points are no evidence of a gain: at least "
                             f"{rule.min_feedback_rows} held-out feedback rows are needed (collect more feedback, "
                             "or raise --holdout)")
    if check.kind in GUARDED_KINDS:
        if difference < -rule.max_regression:
            return "regressed", (f"{where}: {_points(difference)} points, more than the {rule.max_regression:g} "
                                 f"allowed (p = {_p(test['p_value'])})")
        if difference < 0 and significant:
            return "regressed", f"{where}: {_points(difference)} points, a significant drop (p = {_p(test['p_value'])})"
        return "held", None
    if difference <= rule.min_gain:
        return "no gain", f"{where}: {_points(difference)} points, not above the required {rule.min_gain:g}"
    if rule.require_significant_gain and not significant:
        return "no gain", (f"{where}: +{difference:.1f} points, but not significant (p = {_p(test['p_value'])}); "
                           "more held-out feedback rows would tell")
    return "gained", None


def _points(value: float) -> str:
    return f"{value:+.1f}"


def _p(value: float) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.3g}"
