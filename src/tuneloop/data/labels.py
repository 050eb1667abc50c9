"""Classification labels: a row's labels, the label set of a split, and the check that held-out labels were trained.

The token-classification twin (check_known_types) checks entity types the same way.
"""

from __future__ import annotations

from collections import Counter

from tuneloop.data.iob import OUTSIDE, entity_types
from tuneloop.errors import TuneloopError


def is_multi_label(rows: list[dict]) -> bool:
    return any(isinstance(row["label"], list) for row in rows)


def row_labels(row: dict) -> list[str]:
    """A row's labels as a list, whether it holds one label or several."""
    return row["label"] if isinstance(row["label"], list) else [row["label"]]


def label_set(rows: list[dict]) -> list[str]:
    """Every label the rows show, sorted: the order of the classifier's outputs."""
    return sorted({label for row in rows for label in row_labels(row)})


def check_known_labels(rows: list[dict], labels: list[str], split: str) -> None:
    """The head has one output per training label; a label training never showed cannot be predicted."""
    unseen = Counter(label for row in rows for label in row_labels(row) if label not in set(labels))
    if unseen:
        listed = ", ".join(f"{label!r} ({count} row(s))" for label, count in sorted(unseen.items()))
        raise TuneloopError(
            f"data: the {split} split has label(s) the training split never shows: {listed}. The classifier "
            "can only predict labels it trained on: add training rows for them, fix the label spelling, "
            f"or drop those {split} rows."
        )


def check_known_types(rows: list[dict], tags: list[str], split: str) -> None:
    """The head has outputs only for the entity types training showed; another type could never be predicted."""
    known = {tag[2:] for tag in tags if tag != OUTSIDE}
    unseen = Counter(kind for row in rows for kind in entity_types(row["tags"]) if kind not in known)
    if unseen:
        listed = ", ".join(f"{kind!r} ({count} entit{'y' if count == 1 else 'ies'})"
                           for kind, count in sorted(unseen.items()))
        raise TuneloopError(
            f"data: the {split} split tags entity type(s) the training split never shows: {listed}. The tagger "
            f"can only predict types it trained on: add training sentences with them, fix the tag spelling, or "
            f"drop those {split} sentences."
        )
