"""Classification metrics from scikit-learn: accuracy, precision/recall/F1, confusion matrix, ROC and PR curves.

Scales: accuracy, precision, recall, F1 and Hamming loss are percentages (0-100), like the generation
metrics; ROC-AUC, average precision and the curve points stay on 0-1, as they are conventionally read.
Every result carries `correct` (one bool per row) so `tuneloop.evaluate.stats` can put an interval on
accuracy and run McNemar's test between baseline and tuned.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Curves are stored in metrics.json and drawn in the report; ~100 points per curve draws the same picture.
MAX_CURVE_POINTS = 100


def classification_scores(
    y_true: list[str],
    y_pred: list[str],
    labels: list[str] | None = None,
    probabilities: np.ndarray | None = None,
) -> dict[str, Any]:
    """Single-label scores; with `probabilities` (rows x classes, columns in `labels` order) also ROC and PR.

    `labels` fixes the class order of the per-class report, the confusion matrix and the probability
    columns; by default it is every label seen in y_true or y_pred, sorted. Confusion matrix rows are the
    true class, columns the predicted class.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix

    _check_same_length(y_true, y_pred)
    if probabilities is not None and labels is None:
        raise ValueError("probabilities were given without labels: pass labels to say which column is which class")
    labels = labels if labels is not None else sorted(set(y_true) | set(y_pred))
    scores: dict[str, Any] = {
        "n": len(y_true),
        "accuracy": 100 * accuracy_score(y_true, y_pred) if y_true else 0.0,
        **_averaged_precision_recall_f1(y_true, y_pred, labels),
        "per_class": _per_class_report(y_true, y_pred, labels),
        "confusion_matrix": {
            "labels": list(labels),
            "matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist() if y_true else [],
        },
        "correct": [truth == prediction for truth, prediction in zip(y_true, y_pred, strict=True)],
    }
    if probabilities is not None:
        scores.update(_curve_scores(y_true, labels, _checked_probabilities(probabilities, len(y_true), labels)))
    return scores


def _check_same_length(y_true: list, y_pred: list) -> None:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} true labels but {len(y_pred)} predictions; they pair up by row")


def _averaged_precision_recall_f1(y_true: Any, y_pred: Any, labels: list[str] | None) -> dict[str, float]:
    from sklearn.metrics import precision_recall_fscore_support

    scores = {}
    for average in ("micro", "macro"):
        precision = recall = f1 = 0.0
        if len(y_true):
            precision, recall, f1, _ = precision_recall_fscore_support(
                y_true, y_pred, labels=labels, average=average, zero_division=0
            )
        scores[f"precision_{average}"] = 100 * float(precision)
        scores[f"recall_{average}"] = 100 * float(recall)
        scores[f"f1_{average}"] = 100 * float(f1)
    return scores


def _per_class_report(
    y_true: Any, y_pred: Any, labels: list, names: list[str] | None = None
) -> dict[str, dict[str, float | int]]:
    """Precision, recall, F1 (0-100) and support per class, keyed by `names` (default: the labels)."""
    from sklearn.metrics import precision_recall_fscore_support

    names = names if names is not None else labels
    if len(y_true) == 0:
        return {name: {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0} for name in names}
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, average=None, zero_division=0
    )
    return {
        name: {"precision": 100 * float(p), "recall": 100 * float(r), "f1": 100 * float(f), "support": int(s)}
        for name, p, r, f, s in zip(names, precision, recall, f1, support, strict=True)
    }


def _checked_probabilities(probabilities: np.ndarray, rows: int, labels: list[str]) -> np.ndarray:
    probabilities = np.asarray(probabilities, dtype=float)
    if probabilities.shape != (rows, len(labels)):
        raise ValueError(
            f"probabilities have shape {probabilities.shape}, expected ({rows}, {len(labels)}): "
            f"one row per example and one column per label, in the order {labels}"
        )
    return probabilities


def _curve_scores(y_true: list[str], labels: list[str], probabilities: np.ndarray) -> dict[str, Any]:
    """One-vs-rest ROC and PR curves per class; ROC-AUC macro over the classes where it is defined.

    A class with no positive (or no negative) rows has no ROC curve; it is listed under
    `roc_auc_undefined_for` rather than silently counted as 0.5.
    """
    truth = np.asarray(y_true)
    roc_curves, pr_curves, undefined = {}, {}, []
    for column, label in enumerate(labels):
        is_label, scores = truth == label, probabilities[:, column]
        if is_label.all() or not is_label.any():
            undefined.append(label)
            continue
        roc_curves[label] = _roc_curve(is_label, scores)
        pr_curves[label] = _pr_curve(is_label, scores)
    aucs = [curve["auc"] for curve in roc_curves.values()]
    return {
        "roc_auc_macro": float(np.mean(aucs)) if aucs else float("nan"),
        "roc_auc_undefined_for": undefined,
        "roc_curves": roc_curves,
        "pr_curves": pr_curves,
    }


def _roc_curve(is_label: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import roc_auc_score, roc_curve

    fpr, tpr, _ = roc_curve(is_label, scores)
    keep = _evenly_spaced(len(fpr))
    return {"auc": float(roc_auc_score(is_label, scores)), "fpr": fpr[keep].tolist(), "tpr": tpr[keep].tolist()}


def _pr_curve(is_label: np.ndarray, scores: np.ndarray) -> dict[str, Any]:
    from sklearn.metrics import average_precision_score, precision_recall_curve

    precision, recall, _ = precision_recall_curve(is_label, scores)
    keep = _evenly_spaced(len(precision))
    return {
        "average_precision": float(average_precision_score(is_label, scores)),
        "precision": precision[keep].tolist(),
        "recall": recall[keep].tolist(),
    }


def _evenly_spaced(length: int, limit: int = MAX_CURVE_POINTS) -> np.ndarray:
    """Indices of at most `limit` points along a curve, always keeping both ends."""
    if length <= limit:
        return np.arange(length)
    return np.unique(np.linspace(0, length - 1, limit).round().astype(int))


def multilabel_scores(y_true: list[list[str]], y_pred: list[list[str]], labels: list[str]) -> dict[str, Any]:
    """Scores when each row has a set of labels: micro/macro precision, recall, F1, subset accuracy, Hamming loss.

    Subset accuracy counts a row right only when its predicted set equals the true set; `correct` is that
    per row. Hamming loss is the percentage of (row, label) decisions that are wrong.
    """
    from sklearn.metrics import hamming_loss
    from sklearn.preprocessing import MultiLabelBinarizer

    _check_same_length(y_true, y_pred)
    _check_known_labels(y_true, y_pred, labels)
    binarizer = MultiLabelBinarizer(classes=labels).fit([labels])
    truth, predicted = binarizer.transform(y_true), binarizer.transform(y_pred)
    correct = [bool(row) for row in (truth == predicted).all(axis=1)]
    return {
        "n": len(y_true),
        "subset_accuracy": 100 * float(np.mean(correct)) if y_true else 0.0,
        "hamming_loss": 100 * float(hamming_loss(truth, predicted)) if y_true else 0.0,
        **_averaged_precision_recall_f1(truth, predicted, labels=None),
        # Indicator matrices: sklearn names classes by column index.
        "per_class": _per_class_report(truth, predicted, list(range(len(labels))), names=labels),
        "correct": correct,
    }


def _check_known_labels(y_true: list[list[str]], y_pred: list[list[str]], labels: list[str]) -> None:
    unknown = sorted({label for row in [*y_true, *y_pred] for label in row} - set(labels))
    if unknown:
        raise ValueError(f"labels {unknown} appear in the rows but not in labels={labels}; add them or fix the rows")
