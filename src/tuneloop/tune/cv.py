"""k-fold cross-validation for a search: folds that keep near-duplicate clusters together.

The pool is the study's prepared training and validation rows (the test set is never in it). Rows whose
texts are equal or near copies (5-gram Jaccard at the audit's threshold, the data workbench's
`tuneloop.data.dedup`) form one cluster, and a cluster lands in one fold whole, as the workbench's
train/test split does: otherwise a near copy of a validation row would sit in training and flatter it.
"""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path

from tuneloop.data.dedup import clusters, near_duplicate_pairs
from tuneloop.data.text_fields import example_text
from tuneloop.errors import DataError
from tuneloop.workspace import write_jsonl


def cluster_folds(texts: list[str], k: int, seed: int, threshold: float = 0.8) -> list[list[int]]:
    """k lists of row indices; near-duplicate clusters never straddle two folds; fold sizes as even as the
    clusters allow (largest clusters placed first, each into the currently smallest fold)."""
    cluster_of = clusters(len(texts), near_duplicate_pairs(texts, threshold))
    members: dict[int, list[int]] = defaultdict(list)
    for index, cluster in enumerate(cluster_of):
        members[cluster].append(index)
    if len(members) < k:
        raise DataError(f"search.cv_folds={k}: the pool has only {len(members)} distinct (non-near-duplicate) "
                        f"example group(s) in {len(texts)} rows; lower cv_folds or add data.")
    groups = list(members.values())
    random.Random(seed).shuffle(groups)
    groups.sort(key=len, reverse=True)  # stable: equal sizes keep their shuffled order
    folds: list[list[int]] = [[] for _ in range(k)]
    for group in groups:
        min(folds, key=len).extend(group)
    return [sorted(fold) for fold in folds]


def write_folds(rows: list[dict], k: int, seed: int, out_dir: Path, threshold: float = 0.8) -> list[tuple[Path, Path]]:
    """fold-i/train.jsonl and fold-i/validation.jsonl for each fold; returns their paths."""
    folds = cluster_folds([example_text(row) for row in rows], k, seed, threshold)
    paths = []
    for number, held in enumerate(folds):
        held_set = set(held)
        fold_dir = out_dir / f"fold-{number}"
        train_path, validation_path = fold_dir / "train.jsonl", fold_dir / "validation.jsonl"
        write_jsonl(train_path, [row for i, row in enumerate(rows) if i not in held_set])
        write_jsonl(validation_path, [rows[i] for i in held])
        paths.append((train_path, validation_path))
    return paths
