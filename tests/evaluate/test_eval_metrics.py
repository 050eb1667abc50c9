"""Generation metrics checked against hand-computed values: exact match, contains-answer, token F1, ROUGE, BLEU,
chrF, perplexity and summary lengths."""

from __future__ import annotations

import math

import pytest

from tuneloop.data.text_match import contains_answer, exact_match, normalize, token_f1
from tuneloop.evaluate.metrics import (
    corpus_bleu,
    corpus_chrf,
    generation_scores,
    length_statistics,
    perplexity_from_loss,
    rouge_1,
    rouge_2,
    rouge_l,
    rouge_scores,
)

ALL_METRICS = ["exact_match", "contains_answer", "rouge_l", "bleu"]


def test_normalize_lowercases_and_drops_punctuation_articles_and_extra_spaces():
    assert normalize("The  Cat, sat!") == "cat sat"


def test_normalize_removes_articles_only_as_whole_words():
    assert normalize("A theme and an anthem") == "theme and anthem"


def test_normalize_applies_nfkc():
    assert normalize("ＡＢＣ １４") == "abc 14"


def test_exact_match_compares_normalized_text():
    assert exact_match(["Paris.", "the  Paris", "paris france"], ["paris", "PARIS!", "paris"]) == [
        1.0,
        1.0,
        0.0,
    ]


def test_contains_answer_finds_the_answer_as_whole_words():
    assert contains_answer(["Returns are accepted within 45 days."], ["45 days"]) == [1.0]


def test_contains_answer_rejects_a_partial_word_match():
    assert contains_answer(["Returns are accepted within 145 days."], ["45 days"]) == [0.0]


def test_contains_answer_ignores_currency_symbols_on_either_side():
    assert contains_answer(["It costs $14.", "It costs 14 dollars."], ["14", "$14"]) == [1.0, 1.0]


def test_contains_answer_does_not_match_the_integer_part_of_a_decimal():
    assert contains_answer(["It costs $14.50."], ["14"]) == [0.0]


@pytest.mark.parametrize("answer", ["", "  ", "the", "?!"])
def test_contains_answer_is_zero_for_an_answer_that_normalizes_to_nothing(answer):
    assert contains_answer(["the answer is here"], [answer]) == [0.0]


def test_rouge_l_of_identical_strings_is_100():
    assert rouge_l(["the cat sat on the mat"], ["the cat sat on the mat"]) == [pytest.approx(100.0)]


def test_rouge_l_of_a_dropped_word_matches_the_hand_computed_f1():
    # LCS("the cat on the mat", "the cat sat on the mat") = 5 tokens; P = 5/5, R = 5/6, F1 = 10/11.
    assert rouge_l(["the cat on the mat"], ["the cat sat on the mat"]) == [pytest.approx(100 * 10 / 11)]


def test_rouge_l_lowercases_drops_punctuation_and_stems():
    # Tokens after lowercasing, punctuation removal and Porter stemming:
    # prediction [the, cat, were, sit], reference [the, cat, wa, sit]; LCS = 3, P = R = 3/4.
    assert rouge_l(["The Cats were sitting!"], ["the cat was sitting"]) == [pytest.approx(75.0)]


def test_rouge_l_of_disjoint_strings_is_zero():
    assert rouge_l(["alpha beta"], ["gamma delta"]) == [0.0]


def test_corpus_bleu_of_identical_sentences_is_100():
    sentences = ["the quick brown fox jumps over the lazy dog", "a tune-up costs sixty five dollars today"]
    assert corpus_bleu(sentences, sentences) == pytest.approx(100.0)


def test_corpus_bleu_of_disjoint_sentences_is_zero():
    assert corpus_bleu(["alpha beta gamma delta epsilon"], ["one two three four five"]) == 0.0


def test_generation_scores_returns_per_row_values_on_a_0_to_100_scale():
    totals, per_row = generation_scores(
        ["Paris", "It is 45 days.", "no idea"], ["Paris", "45 days", "blue"], ["paris", "45 days", "green"],
        ALL_METRICS,
    )
    assert per_row["exact_match"] == [100.0, 0.0, 0.0]
    assert per_row["contains_answer"] == [100.0, 100.0, 0.0]
    # Row 2: prediction [it, is, 45, day], reference [45, day]; P = 2/4, R = 1, F1 = 2/3.
    assert per_row["rouge_l"] == [pytest.approx(100.0), pytest.approx(200 / 3), 0.0]


def test_generation_scores_totals_are_the_means_of_the_per_row_values():
    totals, per_row = generation_scores(
        ["Paris", "It is 45 days.", "no idea"], ["Paris", "45 days", "blue"], ["paris", "45 days", "green"],
        ALL_METRICS,
    )
    for name, values in per_row.items():
        assert totals[name] == pytest.approx(sum(values) / len(values))
    assert totals["exact_match"] == pytest.approx(100 / 3)
    assert totals["contains_answer"] == pytest.approx(200 / 3)
    assert totals["rouge_l"] == pytest.approx((100 + 200 / 3) / 3)


def test_generation_scores_reports_bleu_only_as_a_corpus_total():
    sentences = ["the quick brown fox jumps over the lazy dog"]
    totals, per_row = generation_scores(sentences, sentences, ["fox"], ALL_METRICS)
    assert totals["bleu"] == pytest.approx(100.0)
    assert "bleu" not in per_row
    assert set(totals) == set(ALL_METRICS)


def test_generation_scores_computes_only_the_requested_metrics():
    totals, per_row = generation_scores(["a b"], ["a b"], ["b"], ["contains_answer"])
    assert totals == {"contains_answer": 100.0}
    assert per_row == {"contains_answer": [100.0]}


def test_generation_scores_of_no_rows_is_zero():
    totals, per_row = generation_scores([], [], [], ["exact_match", "rouge_l"])
    assert totals == {"exact_match": 0.0, "rouge_l": 0.0}
    assert per_row == {"exact_match": [], "rouge_l": []}


def test_token_f1_matches_the_hand_computed_overlap():
    # Normalized: prediction [cat, sat, on, mat], reference [cat, sat]; overlap 2, P = 2/4, R = 2/2, F1 = 2/3.
    assert token_f1(["The cat sat on the mat."], ["cat sat"]) == [pytest.approx(200 / 3)]


def test_token_f1_counts_repeated_tokens_as_a_bag():
    # Prediction {red: 2, blue: 1}, reference {red: 1, blue: 2}; overlap min counts = 1 + 1 = 2, P = R = 2/3.
    assert token_f1(["red red blue"], ["red blue blue"]) == [pytest.approx(200 / 3)]


def test_token_f1_of_identical_and_of_disjoint_text():
    assert token_f1(["Paris, France"], ["paris france"]) == [100.0]
    assert token_f1(["alpha beta"], ["gamma delta"]) == [0.0]


def test_token_f1_when_a_side_normalizes_to_nothing():
    # SQuAD rule: both empty is a match, one empty is not.
    assert token_f1(["the", ""], ["", "cat"]) == [100.0, 0.0]


def test_rouge_1_of_a_dropped_word_matches_the_hand_computed_f1():
    # Unigram overlap of [the, cat, on, the, mat] with [the, cat, sat, on, the, mat] = 5; P = 5/5, R = 5/6, F1 = 10/11.
    assert rouge_1(["the cat on the mat"], ["the cat sat on the mat"]) == [pytest.approx(100 * 10 / 11)]


def test_rouge_2_of_a_dropped_word_matches_the_hand_computed_f1():
    # Bigrams: prediction {the cat, cat on, on the, the mat}; reference {the cat, cat sat, sat on, on the, the mat}.
    # Overlap 3; P = 3/4, R = 3/5, F1 = 2 * (9/20) / (27/20) = 2/3.
    assert rouge_2(["the cat on the mat"], ["the cat sat on the mat"]) == [pytest.approx(200 / 3)]


def test_rouge_scores_computes_the_requested_variants_in_one_pass():
    predictions, references = ["the cat on the mat", "alpha beta"], ["the cat sat on the mat", "gamma delta"]
    scores = rouge_scores(predictions, references, ["rouge_1", "rouge_2", "rouge_l", "bleu"])
    assert scores == {
        "rouge_1": rouge_1(predictions, references),
        "rouge_2": rouge_2(predictions, references),
        "rouge_l": rouge_l(predictions, references),
    }
    assert rouge_scores(predictions, references, ["bleu"]) == {}


def test_corpus_chrf_of_identical_and_of_character_disjoint_sentences():
    sentences = ["the quick brown fox jumps over the lazy dog"]
    assert corpus_chrf(sentences, sentences) == pytest.approx(100.0)
    assert corpus_chrf(["xyz"], ["abc"]) == 0.0


def test_corpus_chrf_gives_partial_credit_for_a_near_miss():
    assert 0.0 < corpus_chrf(["the cats sat"], ["the cat sat"]) < 100.0


def test_corpus_metrics_of_no_rows_are_zero():
    assert corpus_bleu([], []) == 0.0
    assert corpus_chrf([], []) == 0.0


def test_perplexity_from_loss_is_the_exponential_of_the_mean_loss():
    assert perplexity_from_loss(0.0) == 1.0
    assert perplexity_from_loss(math.log(4.0)) == pytest.approx(4.0)


def test_perplexity_from_loss_caps_a_huge_loss_instead_of_overflowing():
    assert perplexity_from_loss(1000.0) == pytest.approx(math.exp(50.0))


def test_generation_scores_returns_the_new_per_row_metrics():
    totals, per_row = generation_scores(
        ["The cat sat on the mat.", "the cat on the mat"],
        ["cat sat", "the cat sat on the mat"],
        ["cat", "mat"],
        ["token_f1", "rouge_1", "rouge_2"],
    )
    # Row 2 tokens after dropping articles: [cat, on, mat] vs [cat, sat, on, mat]; P = 1, R = 3/4, F1 = 6/7.
    assert per_row["token_f1"] == [pytest.approx(200 / 3), pytest.approx(600 / 7)]
    assert per_row["rouge_1"][1] == pytest.approx(100 * 10 / 11)
    assert per_row["rouge_2"][1] == pytest.approx(200 / 3)
    for name, values in per_row.items():
        assert totals[name] == pytest.approx(sum(values) / len(values))


def test_generation_scores_reports_chrf_only_as_a_corpus_total():
    sentences = ["the quick brown fox jumps over the lazy dog"]
    totals, per_row = generation_scores(sentences, sentences, ["fox"], ["chrf", "bleu"])
    assert totals == {"chrf": pytest.approx(100.0), "bleu": pytest.approx(100.0)}
    assert per_row == {}


def test_generation_scores_of_no_rows_is_zero_for_every_metric():
    metrics = ["exact_match", "contains_answer", "token_f1", "rouge_1", "rouge_2", "rouge_l", "bleu", "chrf"]
    totals, per_row = generation_scores([], [], [], metrics)
    assert totals == dict.fromkeys(metrics, 0.0)
    assert all(values == [] for values in per_row.values())


def test_length_statistics_count_words_and_compare_each_side_with_the_references():
    references = ["one two three four", "one two", "a b c d e f"]  # 4, 2, 6 words: mean 4, median 4
    found = length_statistics(references, {
        "baseline": ["a b c d e f g h", "x y z w v u t s r q", "  spaced   out  words "],  # 8, 10, 3
        "tuned": ["a b", "c", "d e f"],  # 2, 1, 3
    })
    assert found["reference"] == {"mean_words": 4.0, "median_words": 4.0}
    assert found["baseline"] == {"mean_words": 7.0, "median_words": 8.0, "ratio_to_reference": 1.75}
    assert found["tuned"] == {"mean_words": 2.0, "median_words": 2.0, "ratio_to_reference": 0.5}


def test_length_statistics_of_empty_replies_and_references():
    found = length_statistics(["", ""], {"tuned": ["", "one"]})
    assert found["reference"] == {"mean_words": 0.0, "median_words": 0.0}
    assert found["tuned"] == {"mean_words": 0.5, "median_words": 0.5, "ratio_to_reference": None}
    assert length_statistics([], {"tuned": []})["tuned"]["mean_words"] == 0.0
