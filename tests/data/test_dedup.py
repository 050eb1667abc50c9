"""Exact and near duplicates, leakage matches and clusters, on rows built here."""

from __future__ import annotations

from tuneloop.data.dedup import (
    clusters,
    exact_duplicate_groups,
    lsh_bands,
    minhash_signatures,
    near_duplicate_pairs,
    near_matches_between,
    normalize_text,
    shingles,
)

BASE = [
    "How do I reset my online banking password?",
    "The card payment was declined at the supermarket yesterday.",
    "Can I change the currency of my savings account to euros?",
    "Why was I charged twice for the same transfer last week?",
]


def test_normalization_ignores_case_whitespace_and_unicode_forms():
    assert normalize_text("  Café\u00a0 OK ") == normalize_text("CAFÉ ok") == "café ok"
    assert normalize_text("ﬁle") == "file"  # NFKC folds the ligature


def test_exact_groups_use_normalized_text():
    texts = ["Hello  World", "hello world", "other", "HELLO WORLD "]
    assert exact_duplicate_groups(texts) == [[0, 1, 3]]


def test_near_pairs_find_light_edits_and_report_exact_jaccard():
    texts = BASE + ["How do I reset my online-banking password??", "Totally unrelated text about gardening tools."]
    pairs = near_duplicate_pairs(texts, threshold=0.7)
    assert [(p.first, p.second) for p in pairs] == [(0, 4)]
    a, b = shingles(texts[0]), shingles(texts[4])
    assert pairs[0].similarity == round(len(a & b) / len(a | b), 3)


def test_identical_signatures_for_equal_normalized_text():
    signatures = minhash_signatures(["Some Text here", "some   text HERE", "different words entirely"])
    assert (signatures[0] == signatures[1]).all()
    assert (signatures[0] == signatures[2]).mean() < 0.2


def test_leakage_matches_point_from_query_to_corpus():
    queries = ["why was i charged twice for the same transfer last week", "A question nobody asked before at all."]
    matches = near_matches_between(queries, BASE, threshold=0.8)
    assert [(m.first, m.second) for m in matches] == [(0, 3)]


def test_bands_favour_recall_at_the_threshold():
    bands, rows = lsh_bands(0.8)
    assert bands * rows <= 128
    assert 1 - (1 - 0.8**rows) ** bands > 0.85  # a pair right at the threshold is likely a candidate
    assert 1 - (1 - 0.85**rows) ** bands > 0.95  # and one a little above it almost surely
    assert 1 - (1 - 0.5**rows) ** bands < 0.05  # while dissimilar pairs rarely cost a check


def test_clusters_link_transitively_with_the_smallest_index_as_root():
    assert clusters(5, [(3, 4), (1, 3)]) == [0, 1, 2, 1, 1]


def test_many_rows_with_planted_copies_are_all_found():
    import random

    rng = random.Random(0)
    words = [f"w{i}" for i in range(500)]
    texts = [" ".join(rng.choices(words, k=12)) for _ in range(2000)]
    planted = []
    for i in range(0, 2000, 40):
        edited = texts[i].split()
        edited[5] = "zz"
        texts.append(" ".join(edited))
        planted.append((i, len(texts) - 1))
    found = {(p.first, p.second) for p in near_duplicate_pairs(texts, threshold=0.7)}
    assert sum(pair in found for pair in planted) >= 0.95 * len(planted)
