"""The forgetting check's verdict: accuracy on each multiple-choice file, base vs tuned, and the failures it sets."""

from __future__ import annotations

from pathlib import Path

from tuneloop.evaluate.stats import compare


def forgetting_failures(results: dict, limit: float | None) -> list[str]:
    """The failure message of each forgetting file whose accuracy fell by more than evaluate.max_forgetting."""
    return [f"forgetting: {Path(path).name} lost {-found['change']:.1f} points of accuracy, more than "
            f"evaluate.max_forgetting={limit}"
            for path, found in results.get("forgetting", {}).items() if found["exceeded"]]


def forgetting_report(tuned: dict, baseline: dict | None, limit: float | None) -> dict:
    """Accuracy on each general-knowledge file, base vs tuned; a drop beyond the limit fails the run."""
    report = {}
    for path, after in tuned["forgetting"].items():
        before = baseline["forgetting"][path] if baseline else None
        # Per-question correctness (0/1) lets a later comparison pair runs question by question.
        entry = {"n": after["n"], "tuned": {"acc": after["acc"], "acc_norm": after["acc_norm"],
                                            "correct": [int(c) for c in after["correct"]]}}
        if before:
            change = after["acc"] - before["acc"]
            entry.update(
                baseline={"acc": before["acc"], "acc_norm": before["acc_norm"],
                          "correct": [int(c) for c in before["correct"]]},
                change=change,
                test=compare([float(c) for c in before["correct"]], [float(c) for c in after["correct"]], binary=True),
                limit=limit,
                exceeded=limit is not None and -change > limit,
            )
        else:
            entry.update(baseline={"acc": float("nan"), "acc_norm": float("nan")}, change=0.0, exceeded=False)
        report[path] = entry
    return report
