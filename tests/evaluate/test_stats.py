"""Bootstrap intervals checked against a known distribution; paired tests against hand-computed and null cases."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tuneloop.evaluate.metrics import corpus_bleu
from tuneloop.evaluate.stats import (
    bootstrap_interval,
    compare,
    corpus_bootstrap_interval,
    mcnemar_test,
    paired_bootstrap_test,
    summarize,
)


def _normal_sample(size: int, seed: int, mean: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(mean, 1.0, size)


def test_bootstrap_interval_covers_the_true_mean_about_95_percent_of_the_time():
    true_mean, trials = 3.0, 200
    covered = 0
    for trial in range(trials):
        sample = _normal_sample(300, seed=1000 + trial, mean=true_mean)
        low, high = bootstrap_interval(sample, resamples=500, seed=trial)
        covered += low <= true_mean <= high
    # 200 trials: the coverage rate has a standard error of about 1.5 points around 95%.
    assert 0.92 <= covered / trials <= 0.98


def test_bootstrap_interval_width_matches_the_normal_theory_width():
    low, high = bootstrap_interval(_normal_sample(400, seed=1), resamples=2000)
    # Normal theory: 2 * 1.96 * sigma / sqrt(n) = 3.92 / 20 = 0.196.
    assert high - low == pytest.approx(0.196, rel=0.15)


def test_bootstrap_interval_shrinks_like_one_over_root_n():
    widths = {}
    for size in (50, 200, 800):
        low, high = bootstrap_interval(_normal_sample(size, seed=size), resamples=1000)
        widths[size] = high - low
    assert widths[50] > widths[200] > widths[800]
    # Four times the rows should halve the width.
    assert widths[800] / widths[200] == pytest.approx(0.5, abs=0.15)


def test_bootstrap_interval_contains_the_sample_mean():
    values = _normal_sample(100, seed=3)
    low, high = bootstrap_interval(values)
    assert low < values.mean() < high


def test_bootstrap_interval_is_reproducible_for_a_seed():
    values = _normal_sample(100, seed=4)
    assert bootstrap_interval(values, seed=11) == bootstrap_interval(values, seed=11)


def test_bootstrap_interval_accepts_other_statistics():
    values = [1.0, 2.0, 3.0, 4.0, 100.0]
    low, high = bootstrap_interval(values, statistic=np.median, resamples=500)
    assert 1.0 <= low <= 3.0 <= high <= 100.0


def test_bootstrap_interval_of_no_rows_is_nan_and_of_one_row_is_that_row():
    assert all(math.isnan(end) for end in bootstrap_interval([]))
    assert bootstrap_interval([42.0]) == (42.0, 42.0)


def test_bootstrap_interval_of_constant_values_is_that_value():
    assert bootstrap_interval([100.0] * 20) == (100.0, 100.0)


def test_corpus_bootstrap_interval_of_a_mean_matches_the_per_row_interval():
    values = np.random.default_rng(5).integers(0, 2, 100) * 100.0
    rows = [str(value) for value in values]

    def mean_of_rows(predictions: list[str], references: list[str]) -> float:
        return float(np.mean([float(p) for p in predictions]))

    corpus_low, corpus_high = corpus_bootstrap_interval(rows, rows, mean_of_rows, resamples=1000)
    row_low, row_high = bootstrap_interval(values, resamples=1000)
    assert corpus_low == pytest.approx(row_low, abs=2.0)
    assert corpus_high == pytest.approx(row_high, abs=2.0)


def test_corpus_bootstrap_interval_brackets_the_corpus_bleu():
    predictions = ["the cat sat on the mat today"] * 20 + ["a dog barked loudly at night"] * 20
    references = ["the cat sat on a mat today"] * 20 + ["the dog barked at night"] * 20
    low, high = corpus_bootstrap_interval(predictions, references, corpus_bleu, resamples=100)
    assert low < corpus_bleu(predictions, references) < high


def test_corpus_bootstrap_interval_edge_cases():
    assert all(math.isnan(end) for end in corpus_bootstrap_interval([], [], corpus_bleu))
    assert corpus_bootstrap_interval(["a b c d"], ["a b c d"], corpus_bleu) == pytest.approx((100.0, 100.0))
    with pytest.raises(ValueError, match="pair up by row"):
        corpus_bootstrap_interval(["a"], ["a", "b"], corpus_bleu)


def test_paired_bootstrap_detects_a_clear_shift():
    baseline = _normal_sample(200, seed=6)
    tuned = baseline + 0.5 + _normal_sample(200, seed=7)
    result = paired_bootstrap_test(baseline, tuned)
    assert result["p_value"] < 0.01
    assert 0 < result["low"] < result["difference"] < result["high"]
    assert result["difference"] == pytest.approx(0.5, abs=0.2)
    assert result["difference"] == pytest.approx(float(np.mean(tuned - baseline)))


def test_paired_bootstrap_of_identical_scores_finds_no_difference():
    scores = _normal_sample(50, seed=8)
    assert paired_bootstrap_test(scores, scores) == {"difference": 0.0, "low": 0.0, "high": 0.0, "p_value": 1.0}


def test_paired_bootstrap_false_positive_rate_under_no_shift_is_near_5_percent():
    trials, false_positives = 400, 0
    for trial in range(trials):
        baseline = _normal_sample(100, seed=5000 + trial)
        tuned = baseline + _normal_sample(100, seed=9000 + trial)
        false_positives += paired_bootstrap_test(baseline, tuned, resamples=500, seed=trial)["p_value"] < 0.05
    assert 0.02 <= false_positives / trials <= 0.10


def test_paired_bootstrap_sign_follows_tuned_minus_baseline():
    result = paired_bootstrap_test([1.0, 2.0, 3.0, 4.0], [0.0, 1.0, 2.0, 3.0])
    assert result["difference"] == -1.0


def test_paired_bootstrap_rejects_unpaired_rows():
    with pytest.raises(ValueError, match="same rows"):
        paired_bootstrap_test([1.0, 2.0], [1.0])


def _mcnemar_rows(both_right: int, only_baseline: int, only_tuned: int, both_wrong: int):
    baseline = [True] * both_right + [True] * only_baseline + [False] * only_tuned + [False] * both_wrong
    tuned = [True] * both_right + [False] * only_baseline + [True] * only_tuned + [False] * both_wrong
    return baseline, tuned


def test_mcnemar_exact_matches_a_hand_computed_binomial():
    baseline, tuned = _mcnemar_rows(both_right=5, only_baseline=1, only_tuned=9, both_wrong=3)
    result = mcnemar_test(baseline, tuned)
    # Two-sided: 2 * P(X <= 1) for X ~ Binomial(10, 1/2) = 2 * (C(10,0) + C(10,1)) / 2^10 = 22 / 1024.
    hand = 2 * (math.comb(10, 0) + math.comb(10, 1)) / 2**10
    assert hand == pytest.approx(0.021484375)
    assert result == {"b": 1, "c": 9, "statistic": 1.0, "p_value": pytest.approx(hand), "method": "exact binomial"}


def test_mcnemar_chi_square_matches_a_hand_computed_value():
    baseline, tuned = _mcnemar_rows(both_right=50, only_baseline=10, only_tuned=30, both_wrong=10)
    result = mcnemar_test(baseline, tuned)
    # (|10 - 30| - 1)^2 / 40 = 361 / 40; with one degree of freedom P(chi2 > x) = erfc(sqrt(x / 2)).
    assert result["statistic"] == pytest.approx(361 / 40)
    assert result["p_value"] == pytest.approx(math.erfc(math.sqrt(361 / 80)))
    assert result["method"] == "chi-square with continuity correction"


def test_mcnemar_without_disagreements_has_p_value_one():
    baseline, tuned = _mcnemar_rows(both_right=7, only_baseline=0, only_tuned=0, both_wrong=3)
    assert mcnemar_test(baseline, tuned)["p_value"] == 1.0


def test_summarize_gives_mean_interval_and_count():
    summary = summarize([0.0, 100.0] * 50)
    assert summary["mean"] == 50.0
    assert summary["n"] == 100
    assert summary["low"] < 50.0 < summary["high"]


def test_summarize_of_no_rows_is_nan():
    summary = summarize([])
    assert summary["n"] == 0
    assert math.isnan(summary["mean"]) and math.isnan(summary["low"])


def test_compare_uses_mcnemar_for_right_wrong_scores_on_either_scale():
    baseline, tuned = _mcnemar_rows(both_right=5, only_baseline=1, only_tuned=9, both_wrong=3)
    for scale in (1.0, 100.0):
        result = compare([scale * b for b in baseline], [scale * t for t in tuned])
        assert result["test"] == "mcnemar"
        assert result["p_value"] == pytest.approx(22 / 1024)
        assert result["difference"] == pytest.approx(scale * 8 / 18)
        assert result["significant"] is True


def test_compare_uses_the_paired_bootstrap_for_graded_scores():
    baseline = _normal_sample(100, seed=10, mean=50.0)
    result = compare(baseline, baseline + 0.01)
    assert result["test"] == "paired bootstrap"
    assert result["difference"] == pytest.approx(0.01)
    assert result["significant"] is True


def test_compare_is_not_significant_for_identical_scores():
    result = compare([0.0, 100.0, 100.0], [0.0, 100.0, 100.0])
    assert result["significant"] is False
    assert result["p_value"] == 1.0


def test_compare_binary_flag_overrides_detection_and_checks_values():
    assert compare([0.0, 1.0, 1.0], [1.0, 1.0, 1.0], binary=False)["test"] == "paired bootstrap"
    with pytest.raises(ValueError, match="right/wrong"):
        compare([0.0, 0.5], [1.0, 1.0], binary=True)
