"""NER metrics (seqeval) on a hand-worked example, the most-frequent-tag baseline, and bootstrap intervals on F1."""

from __future__ import annotations

import pytest

from tuneloop.evaluate.token_classification import (
    entities_text,
    entity_scores,
    f1_intervals,
    lexicon_tags,
    most_frequent_tags,
)

# Gold: Peter Blackburn (PER), Bonn (LOC) | EU (ORG) | no entity.
GOLD = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"], ["O", "O"]]
# Predicted: PER right; LOC missed; EU found (an I- start reads as an entity start, as in conlleval);
# a spurious MISC in the last sentence.
PREDICTED = [["B-PER", "I-PER", "O", "O"], ["I-ORG", "O"], ["B-MISC", "O"]]


def test_entity_scores_by_hand():
    scores = entity_scores(GOLD, PREDICTED)
    # 3 gold entities, 3 predicted, 2 right: precision 2/3, recall 2/3.
    assert scores["entity_precision"] == pytest.approx(200 / 3)
    assert scores["entity_recall"] == pytest.approx(200 / 3)
    assert scores["entity_f1"] == pytest.approx(200 / 3)
    assert scores["token_accuracy"] == pytest.approx(100 * 5 / 8)  # wrong: Bonn, EU (I- vs B-), the MISC word
    per_type = scores["per_type"]
    assert per_type["PER"] == {"precision": 100.0, "recall": 100.0, "f1": 100.0, "support": 1}
    assert per_type["LOC"]["recall"] == 0.0 and per_type["LOC"]["support"] == 1
    assert per_type["MISC"]["precision"] == 0.0 and per_type["MISC"]["support"] == 0
    assert scores["entity_f1_macro"] == pytest.approx((100 + 0 + 100 + 0) / 4)
    assert scores["counts"] == [(1, 1, 2), (1, 1, 1), (0, 1, 0)]


def test_a_span_off_by_one_word_is_wrong():
    scores = entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])
    assert scores["entity_f1"] == 0.0 and scores["token_accuracy"] == 50.0


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="sentence 0: 2 gold tags but 1 predicted"):
        entity_scores([["O", "O"]], [["O"]])


def test_the_baseline_tags_each_word_with_its_most_frequent_training_tag():
    train = [
        {"tokens": ["Washington", "said"], "tags": ["B-PER", "O"]},
        {"tokens": ["in", "Washington"], "tags": ["O", "B-LOC"]},
        {"tokens": ["Washington", "State"], "tags": ["B-LOC", "I-LOC"]},
        {"tokens": ["Paris", "Paris"], "tags": ["B-PER", "B-LOC"]},  # a tie: the alphabetically first tag wins
    ]
    lexicon = most_frequent_tags(train)
    assert lexicon["Washington"] == "B-LOC" and lexicon["Paris"] == "B-LOC" and lexicon["said"] == "O"
    assert lexicon_tags(lexicon, ["Washington", "State", "Berlin", "said"]) == ["B-LOC", "I-LOC", "O", "O"]


def test_f1_intervals_bracket_the_observed_f1_and_pair_the_sides():
    tuned = entity_scores(GOLD * 30, PREDICTED * 30)
    baseline = entity_scores(GOLD * 30, [["O"] * len(tags) for tags in GOLD] * 30)
    found = f1_intervals(baseline["counts"], tuned["counts"])
    low, high = found["intervals"]["tuned"]
    assert low <= tuned["entity_f1"] <= high and low < high
    assert found["intervals"]["baseline"] == [0.0, 0.0]
    comparison = found["comparison"]
    assert comparison["difference"] == pytest.approx(tuned["entity_f1"])
    assert comparison["significant"] and comparison["p_value"] < 0.05 and comparison["test"] == "paired bootstrap"
    same = f1_intervals(tuned["counts"], tuned["counts"])["comparison"]
    assert same["difference"] == 0.0 and same["p_value"] == 1.0 and not same["significant"]
    one = f1_intervals([(0, 0, 1)], [(1, 1, 1)])
    assert one["intervals"]["tuned"] == [100.0, 100.0] and one["comparison"]["p_value"] == 1.0


def test_entities_text_lists_spans_in_reading_order():
    assert entities_text(["Peter", "Blackburn", "in", "Bonn"], GOLD[0]) == "Peter Blackburn (PER); Bonn (LOC)"
    assert entities_text(["a", "b"], ["O", "O"]) == "(no entities)"
