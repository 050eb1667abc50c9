"""Train/test splits that keep near-duplicate clusters on one side, so no near-copy of a test row is in train.

Rows are linked when their normalized texts are equal or their 5-gram Jaccard similarity reaches the
threshold; augmented rows are linked to their source row. Preference pairs and unpaired (KTO) rows are
compared by their prompt alone, so every pair on one prompt (and every near copy of it) lands on one
side. Whole clusters are then assigned to test (per label when stratifying) until each side has its
share. Clusters holding an augmented row always go to train: augmentation must never reach an evaluation split.
"""

from __future__ import annotations

import random
from collections import Counter, defaultdict
from pathlib import Path

from tuneloop.data.augment import is_augmented
from tuneloop.data.dedup import clusters, near_duplicate_pairs, normalize_text
from tuneloop.data.prepare import load_examples
from tuneloop.data.text_fields import example_text, input_text
from tuneloop.errors import DataError
from tuneloop.workspace import write_jsonl


def augmented_source(fields: dict) -> int | None:
    """The 1-based position, among the file's rows, of the row an augmented row was made from."""
    tag = fields.get("augmented")
    source = tag.get("source_row") if isinstance(tag, dict) else fields.get("augmented_source_row")
    try:
        return int(source) if source not in (None, "") else None
    except (TypeError, ValueError):
        return None


def splitting_texts(examples: list[dict]) -> tuple[list[str], list[tuple[int, int]]]:
    """What the split compares for each example, and links between rows that must stay together.

    Preference and unpaired rows are compared by their prompt (identical prompts linked), since a test
    prompt answered in training measures memory; other rows by their whole text.
    """
    if not examples or not ("chosen" in examples[0] or "desirable" in examples[0]):
        return [example_text(ex) for ex in examples], []
    texts = [input_text(ex) for ex in examples]
    first_with: dict[str, int] = {}
    links = []
    for index, text in enumerate(texts):
        first = first_with.setdefault(normalize_text(text), index)
        if first != index:
            links.append((index, first))
    return texts, links


def split_rows(
    texts: list[str],
    test_size: float,
    seed: int = 0,
    strata: list[str] | None = None,
    augmented: list[bool] | None = None,
    links: list[tuple[int, int]] = (),
    threshold: float = 0.8,
) -> tuple[list[int], list[int]]:
    """Indices of train and test rows; near-duplicate clusters (and explicit links) never straddle the split."""
    if not 0 < test_size < 1:
        raise DataError(f"--test-size must be between 0 and 1, got {test_size}.")
    pairs = [(p.first, p.second) for p in near_duplicate_pairs(texts, threshold)] + list(links)
    cluster_of = clusters(len(texts), pairs)
    members: dict[int, list[int]] = defaultdict(list)
    for index, cluster in enumerate(cluster_of):
        members[cluster].append(index)
    pinned_to_train = {cluster_of[i] for i, flag in enumerate(augmented or []) if flag}

    by_stratum: dict[str, list[int]] = defaultdict(list)
    for cluster, rows in members.items():
        stratum = Counter(strata[i] for i in rows).most_common(1)[0][0] if strata else ""
        by_stratum[stratum].append(cluster)
    rng = random.Random(seed)
    test: list[int] = []
    for stratum in sorted(by_stratum):
        candidates = [c for c in sorted(by_stratum[stratum]) if c not in pinned_to_train]
        rng.shuffle(candidates)
        wanted = round(test_size * sum(len(members[c]) for c in by_stratum[stratum]))
        taken = 0
        for cluster in candidates:
            if taken >= wanted:
                break
            if taken + len(members[cluster]) > wanted * 1.5 and taken > 0:
                continue  # a big cluster would overshoot this stratum's share; try smaller ones
            test.extend(members[cluster])
            taken += len(members[cluster])
    test_set = set(test)
    return [i for i in range(len(texts)) if i not in test_set], sorted(test_set)


def split_test_off(examples: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A held-out test set that shares no near-duplicate cluster (for preference rows: no prompt) with what
    stays for training."""
    keep, test = split_test_indices(examples, share, seed)
    return [examples[i] for i in keep], [examples[i] for i in test]


def split_test_indices(examples: list[dict], share: float, seed: int) -> tuple[list[int], list[int]]:
    texts, links = splitting_texts(examples)
    keep, test = split_rows(texts, share, seed, links=links)
    if not test:
        raise DataError(f"data.test_size={share}: too few examples to split a test set off; add data.test_file.")
    return keep, test


def split_file(
    path: str | Path, out_dir: str | Path, test_size: float = 0.1, stratify: str | None = None,
    seed: int = 0, fmt: str = "auto", threshold: float = 0.8, skip_invalid: bool = False,
) -> dict:
    """Write out_dir/train.jsonl and out_dir/test.jsonl (rows as read) and return a summary."""
    loaded = load_examples(path, fmt, skip_invalid=skip_invalid)
    rows = loaded.raw_rows
    strata = None
    if stratify:
        missing = [loaded.locations[i] for i, row in enumerate(rows) if stratify not in row]
        if missing:
            raise DataError(f"{missing[0]}: no field {stratify!r} to stratify on (fields: {sorted(rows[0])}).")
        strata = [str(row[stratify]) for row in rows]
    texts, links = splitting_texts(loaded.examples)
    for index, row in enumerate(rows):
        source = augmented_source(row)
        if source is not None and 0 < source <= len(rows):
            links.append((index, source - 1))
    train, test = split_rows(
        texts, test_size, seed, strata,
        [is_augmented(row) for row in rows], links, threshold,
    )
    out = Path(out_dir)
    write_jsonl(out / "train.jsonl", [rows[i] for i in train])
    write_jsonl(out / "test.jsonl", [rows[i] for i in test])
    summary = {
        "rows": len(rows), "train": len(train), "test": len(test), "seed": seed, "stratify": stratify,
        "near_threshold": threshold, "skipped_rows": len(loaded.bad_rows),
        "files": {"train": str(out / "train.jsonl"), "test": str(out / "test.jsonl")},
    }
    if strata:
        summary["test_share_per_label"] = {
            label: round(sum(1 for i in test if strata[i] == label) / count, 3)
            for label, count in sorted(Counter(strata).items())
        }
    return summary
