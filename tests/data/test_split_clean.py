"""Cluster-aware splits and cleaning: near copies stay on one side, augmented rows stay in train."""

from __future__ import annotations

import json
from collections import Counter

from tuneloop.data.clean import clean_file
from tuneloop.data.dedup import near_matches_between
from tuneloop.data.split import split_file, split_rows
from tuneloop.workspace import read_jsonl


def sentences(count: int) -> list[str]:
    import random

    rng = random.Random(1)
    words = [f"word{i}" for i in range(300)]
    return [" ".join(rng.choices(words, k=10)) for _ in range(count)]


def test_near_copies_never_straddle_the_split():
    texts = sentences(200)
    texts += [t + " !" for t in texts[:50]]  # 50 near copies
    train, test = split_rows(texts, test_size=0.2, seed=3)
    assert sorted(train + test) == list(range(250))
    assert 0.15 * 250 <= len(test) <= 0.25 * 250
    leaked = near_matches_between([texts[i] for i in test], [texts[i] for i in train], threshold=0.8)
    assert leaked == []


def test_split_is_seeded():
    texts = sentences(100)
    assert split_rows(texts, 0.3, seed=1) == split_rows(texts, 0.3, seed=1)
    assert split_rows(texts, 0.3, seed=1) != split_rows(texts, 0.3, seed=2)


def test_stratified_file_split_keeps_label_shares_and_augmented_rows_in_train(tmp_path):
    texts = sentences(120)
    rows = [{"text": t, "label": "pos" if i % 3 else "neg"} for i, t in enumerate(texts)]
    rows += [{"text": texts[i] + " indeed", "label": rows[i]["label"],
              "augmented": {"method": "eda", "source_row": i + 1}} for i in range(0, 30, 3)]
    source = tmp_path / "all.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = split_file(source, tmp_path / "out", test_size=0.25, stratify="label", seed=0)
    test = read_jsonl(tmp_path / "out" / "test.jsonl")
    assert not any("augmented" in row for row in test)
    augmented_sources = {texts[i] for i in range(0, 30, 3)}
    assert not augmented_sources & {row["text"] for row in test}  # their sources stay in train too
    shares = summary["test_share_per_label"]
    assert abs(shares["pos"] - 0.25) < 0.08 and abs(shares["neg"] - 0.25) < 0.08
    assert Counter(r["label"] for r in test)["neg"] > 0


def test_clean_removes_duplicates_drops_invalid_and_redacts(tmp_path):
    rows = [{"prompt": "Hello there", "completion": "Hi"}, {"prompt": "hello  THERE", "completion": "Hi"},
            {"prompt": "Mail me at ann@example.org", "completion": "Sure"}, {"prompt": "", "completion": "x"}]
    source = tmp_path / "raw.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = clean_file(source, tmp_path / "clean.jsonl", dedup="exact", redact_pii=True, drop_invalid=True)
    cleaned = read_jsonl(tmp_path / "clean.jsonl")
    assert summary["rows_out"] == 2 and summary["invalid_dropped"] == 1 and summary["duplicates_removed"] == 1
    assert cleaned[1]["prompt"] == "Mail me at [EMAIL]" and summary["rows_redacted"] == 1


def test_clean_to_csv_keeps_columns(tmp_path):
    source = tmp_path / "raw.csv"
    source.write_text("text,label\nGood film,1\ngood  film,1\nBad film,0\n")
    clean_file(source, tmp_path / "clean.csv", dedup="exact")
    assert (tmp_path / "clean.csv").read_text().splitlines() == ["text,label", "Good film,1", "Bad film,0"]


def test_chat_rows_cannot_be_flattened_into_csv_cells(tmp_path):
    import pytest

    from tuneloop.errors import DataError

    source = tmp_path / "chat.jsonl"
    source.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                               {"role": "assistant", "content": "hello"}]}) + "\n")
    with pytest.raises(DataError, match="column 'messages' holds a list"):
        clean_file(source, tmp_path / "clean.csv")
    assert not (tmp_path / "clean.csv").exists()
