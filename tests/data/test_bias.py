"""Bias screen: whole-word term counts per label, and flags only where the data is really skewed."""

from __future__ import annotations

import json

import pytest

from tuneloop.data.bias import bias_screen

FEMALE_NEGATIVE = "She said the service was slow and rude."
FEMALE_POSITIVE = "She loved how fast the repair was."
MALE_NEGATIVE = "He said the service was slow and rude."
MALE_POSITIVE = "He loved how fast the repair was."
NEUTRAL = "The parcel arrived on time."


def skewed_dataset() -> tuple[list[str], list[str]]:
    """Rows about women are mostly negative, rows about men mostly positive; 20 rows each."""
    rows = (
        [(FEMALE_NEGATIVE, "negative")] * 16 + [(FEMALE_POSITIVE, "positive")] * 4
        + [(MALE_NEGATIVE, "negative")] * 4 + [(MALE_POSITIVE, "positive")] * 16
        + [(NEUTRAL, "positive")] * 10 + [(NEUTRAL, "negative")] * 10
    )
    return [text for text, _ in rows], [label for _, label in rows]


def balanced_dataset() -> tuple[list[str], list[str]]:
    rows = (
        [(FEMALE_NEGATIVE, "negative")] * 10 + [(FEMALE_POSITIVE, "positive")] * 10
        + [(MALE_NEGATIVE, "negative")] * 11 + [(MALE_POSITIVE, "positive")] * 9
    )
    return [text for text, _ in rows], [label for _, label in rows]


def test_skewed_labels_are_flagged_with_label_and_term_group():
    texts, labels = skewed_dataset()
    report = bias_screen(texts, labels)
    skews = [flag for flag in report["flags"] if flag["kind"] == "label_skew"]
    negative = next(flag for flag in skews if flag["label"] == "negative")
    assert negative["term_group"] == "gender"
    assert negative["over_represented"] == "female" and negative["compared_with"] == "male"
    assert negative["shares"] == {"female": 0.8, "male": 0.2}
    assert negative["ratio"] == 4.0 and negative["p_value"] < 0.05
    assert "80% of rows mentioning female terms are labelled 'negative'" in negative["message"]
    # The same association seen from the other label.
    seen_from = {(flag["label"], flag["over_represented"]) for flag in skews}
    assert seen_from == {("negative", "female"), ("positive", "male")}


def test_balanced_dataset_is_not_flagged():
    texts, labels = balanced_dataset()
    assert bias_screen(texts, labels)["flags"] == []


def test_small_counts_are_not_flagged():
    texts, labels = skewed_dataset()
    few = [text for text in texts if text != NEUTRAL][::5]  # 8 rows: 4 female, 4 male
    few_labels = [label for text, label in zip(texts, labels, strict=True) if text != NEUTRAL][::5]
    assert bias_screen(few, few_labels, min_count=5)["flags"] == []


def test_counts_per_label_and_overall():
    texts, labels = skewed_dataset()
    report = bias_screen(texts, labels)
    gender = report["term_groups"]["gender"]
    assert report["rows"] == 60 and report["labels"] == {"negative": 30, "positive": 30}
    assert gender["overall"] == {"female": 20, "male": 20}
    assert gender["by_label"]["negative"] == {"female": 16, "male": 4}
    assert report["term_groups"]["age"]["overall"] == {"young": 0, "old": 0}
    json.dumps(report)  # the report must be JSON-serializable as is


def test_whole_word_matching():
    texts = [
        "The manager and the mankind exhibit: thesis, then other.",  # no gender terms: man/he only inside words
        "The man's bike and the woman's car.",  # "man" and "woman" as words (possessive)
        "THE OLD PEOPLE'S HOME hired HIM.",  # case-insensitive; a phrase term
        "A senior engineer fixed the old phone.",  # "senior" and "old" alone are not age terms
    ]
    counts = [bias_screen([text])["term_groups"] for text in texts]
    assert counts[0]["gender"]["overall"] == {"female": 0, "male": 0}
    assert counts[1]["gender"]["overall"] == {"female": 1, "male": 1}
    assert counts[2]["gender"]["overall"]["male"] == 1 and counts[2]["age"]["overall"]["old"] == 1
    assert counts[3]["age"]["overall"] == {"young": 0, "old": 0}


def test_rows_are_counted_once_however_many_terms_they_mention():
    report = bias_screen(["She told her sister that she and her mother agreed."])
    assert report["term_groups"]["gender"]["overall"] == {"female": 1, "male": 0}


def test_without_groups_a_gender_imbalance_over_3_to_1_is_flagged():
    texts = [MALE_POSITIVE] * 16 + [FEMALE_POSITIVE] * 4 + [NEUTRAL] * 5
    report = bias_screen(texts)
    assert report["labels"] == {} and report["term_groups"]["gender"]["by_label"] == {}
    [flag] = report["flags"]
    assert flag["kind"] == "imbalance" and flag["over_represented"] == "male" and flag["ratio"] == 4.0
    assert "outnumber" in flag["message"] and "(16 vs 4;" in flag["message"]
    assert bias_screen([MALE_POSITIVE] * 9 + [FEMALE_POSITIVE] * 3)["flags"] == []  # exactly 3:1 is not above it
    assert bias_screen([MALE_POSITIVE] * 4)["flags"] == []  # too few rows to say anything


def test_multi_label_rows_and_custom_lexicon():
    lexicon = {"pets": {"cats": ("cat", "cats"), "dogs": ("dog", "dogs")}}
    texts = ["my cat", "two cats", "a dog"]
    report = bias_screen(texts, [["a", "b"], "a", ("b",)], lexicon=lexicon)
    assert report["labels"] == {"a": 2, "b": 2}
    pets = report["term_groups"]["pets"]
    assert pets["overall"] == {"cats": 2, "dogs": 1}
    assert pets["by_label"] == {"a": {"cats": 2, "dogs": 0}, "b": {"cats": 1, "dogs": 1}}


def test_groups_must_match_texts():
    with pytest.raises(ValueError, match="groups has 1 entries but texts has 2"):
        bias_screen(["a", "b"], ["x"])
