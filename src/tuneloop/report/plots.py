"""The report's pictures, drawn with matplotlib (no display needed) and returned as PNG bytes."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # headless: no display, no GUI toolkit

import matplotlib.pyplot as plt  # noqa: E402

BLUE, ORANGE, GREY = "#4c78a8", "#f58518", "#9aa5b1"


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def loss_curves(records: list[dict]) -> bytes | None:
    """Training loss per logged step and validation loss per evaluation, on one axis."""
    train = [(r["step"], r["loss"]) for r in records if "loss" in r and "eval_loss" not in r]
    validation = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train and not validation:
        return None
    figure, axis = plt.subplots(figsize=(7, 3.4))
    if train:
        axis.plot(*zip(*train, strict=True), color=BLUE, linewidth=1.4, label="train loss")
    if validation:
        axis.plot(*zip(*validation, strict=True), color=ORANGE, marker="o", linewidth=1.6, label="validation loss")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.grid(alpha=0.3)
    axis.legend(frameon=False)
    return _png(figure)


def reward_curves(records: list[dict]) -> bytes | None:
    """GRPO: mean reward of the sampled replies (and each function's) per logged step, KL to the start beside it."""
    steps = [r for r in records if "reward" in r]
    if not steps:
        return None
    figure, axis = plt.subplots(figsize=(7, 3.4))
    axis.plot([r["step"] for r in steps], [r["reward"] for r in steps], color=BLUE, linewidth=1.8, label="reward")
    names = sorted({key for r in steps for key in r if key.startswith("rewards/") and key.endswith("/mean")})
    for name in names:
        points = [(r["step"], r[name]) for r in steps if name in r]
        axis.plot(*zip(*points, strict=True), linewidth=1, alpha=0.8, label=name.removeprefix("rewards/")
                  .removesuffix("/mean"))
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("mean reward")
    axis.grid(alpha=0.3)
    kl = [(r["step"], r["kl"]) for r in steps if isinstance(r.get("kl"), int | float)]
    handles, labels = axis.get_legend_handles_labels()
    if kl:
        right = axis.twinx()
        (line,) = right.plot(*zip(*kl, strict=True), color=ORANGE, linestyle="--", linewidth=1.4)
        right.set_ylabel("KL to the starting model")
        handles.append(line)
        labels.append("KL")
    axis.legend(handles, labels, frameon=False, fontsize=8, loc="upper left")
    return _png(figure)


PREFERENCE_CURVES = ("rewards/chosen", "rewards/rejected", "rewards/margins")


def preference_curves(records: list[dict]) -> bytes | None:
    """TRL's preference-training logs: rewards of chosen and rejected replies and their margin per step (left),
    the share of pairs the implicit reward ranks right (right axis)."""
    train = [r for r in records if any(key in r for key in PREFERENCE_CURVES) and "eval_loss" not in r]
    if not train:
        return None
    figure, axis = plt.subplots(figsize=(7, 3.4))
    for key, color in zip(PREFERENCE_CURVES, (BLUE, ORANGE, "#54a24b"), strict=True):
        points = [(r["step"], r[key]) for r in train if key in r]
        if points:
            axis.plot(*zip(*points, strict=True), color=color, linewidth=1.4, label=key)
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("implicit reward")
    axis.grid(alpha=0.3)
    accuracy = [(r["step"], r["rewards/accuracies"]) for r in train if "rewards/accuracies" in r]
    if accuracy:
        right = axis.twinx()
        right.plot(*zip(*accuracy, strict=True), color=GREY, linestyle="--", linewidth=1.2, label="rewards/accuracies")
        right.set_ylabel("accuracy")
        right.set_ylim(-0.05, 1.05)
        right.legend(frameon=False, loc="lower right")
    axis.legend(frameon=False, loc="upper left")
    return _png(figure)


def metric_bars(rows: list[tuple[str, float | None, float, tuple | None, tuple | None]]) -> bytes | None:
    """Baseline and tuned side by side per metric (0-100 scale), with 95% intervals as error bars.

    rows: (name, baseline, tuned, baseline_interval, tuned_interval).
    """
    if not rows:
        return None
    figure, axis = plt.subplots(figsize=(7, 0.5 + 0.55 * len(rows)))
    positions = range(len(rows))
    for offset, index, color, label in ((-0.2, 1, GREY, "baseline"), (0.2, 2, BLUE, "tuned")):
        values = [row[index] if row[index] is not None else 0.0 for row in rows]
        errors = [_error(row[index], row[index + 2]) for row in rows]
        low, high = zip(*errors, strict=True)
        axis.barh([p + offset for p in positions], values, height=0.38, color=color, label=label,
                  xerr=[low, high], error_kw={"elinewidth": 1, "capsize": 2, "ecolor": "#333"})
    axis.set_yticks(list(positions), [row[0] for row in rows])
    axis.invert_yaxis()
    axis.set_xlabel("score (0-100)")
    axis.grid(axis="x", alpha=0.3)
    axis.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(figure)


def _error(value, interval) -> tuple[float, float]:
    if value is None or not interval or interval[0] is None:
        return 0.0, 0.0
    return max(0.0, value - interval[0]), max(0.0, interval[1] - value)


def confusion_matrix(labels: list[str], matrix: list[list[int]]) -> bytes:
    size = max(4.0, 0.28 * len(labels) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    image = axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(labels)), labels, rotation=90, fontsize=7 if len(labels) > 15 else 9)
    axis.set_yticks(range(len(labels)), labels, fontsize=7 if len(labels) > 15 else 9)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if len(labels) <= 12:
        for i, row in enumerate(matrix):
            for j, count in enumerate(row):
                axis.text(j, i, str(count), ha="center", va="center", fontsize=8)
    figure.colorbar(image, ax=axis, fraction=0.046)
    return _png(figure)


def roc_curves(curves: dict[str, dict]) -> bytes:
    """One ROC curve per class (one-vs-rest); curves: label -> {"fpr": [...], "tpr": [...], "auc": float}."""
    figure, axis = plt.subplots(figsize=(5, 4.5))
    for label, curve in list(curves.items())[:20]:
        axis.plot(curve["fpr"], curve["tpr"], linewidth=1, label=f"{label} ({curve.get('auc', float('nan')):.2f})")
    axis.plot([0, 1], [0, 1], color=GREY, linestyle="--", linewidth=1)
    axis.set_xlabel("false positive rate")
    axis.set_ylabel("true positive rate")
    if len(curves) <= 10:
        axis.legend(frameon=False, fontsize=7)
    return _png(figure)


def compare_runs(names: list[str], metrics: dict[str, list[float | None]]) -> bytes:
    """Grouped bars: one group per metric, one bar per run."""
    figure, axis = plt.subplots(figsize=(max(6, 1.2 * len(metrics) * max(1, len(names)) / 2), 3.6))
    width = 0.8 / max(1, len(names))
    for index, name in enumerate(names):
        values = [metrics[metric][index] or 0.0 for metric in metrics]
        axis.bar([m + index * width for m in range(len(metrics))], values, width=width, label=name)
    axis.set_xticks([m + 0.4 - width / 2 for m in range(len(metrics))], list(metrics), rotation=20)
    axis.grid(axis="y", alpha=0.3)
    axis.legend(frameon=False, fontsize=8)
    return _png(figure)


def task_vs_forgetting(points: list[tuple[str, float, float]], task: str, forgetting: str) -> bytes:
    """One labelled point per run: forgetting (x, higher is worse) against the task metric (y)."""
    figure, axis = plt.subplots(figsize=(6, 4))
    for name, x, y in points:
        axis.scatter([x], [y], color=BLUE)
        axis.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axis.set_xlabel(forgetting)
    axis.set_ylabel(task)
    axis.set_title("task vs forgetting (up and left is better)", fontsize=10)
    axis.grid(alpha=0.3)
    return _png(figure)
