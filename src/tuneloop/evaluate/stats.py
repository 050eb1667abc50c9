"""Uncertainty for evaluation numbers: 95% bootstrap intervals and paired baseline-vs-tuned tests.

- `bootstrap_interval` / `summarize`: percentile bootstrap over rows for a per-row metric's mean.
- `corpus_bootstrap_interval`: the same for corpus metrics (BLEU, chrF), recomputing the metric per resample.
- `paired_bootstrap_test`: resamples rows (keeping each baseline/tuned pair together) for the mean difference.
- `mcnemar_test`: for right/wrong rows, uses only the rows where the two models disagree.
- `compare`: picks McNemar for right/wrong scores and the paired bootstrap otherwise.

No data gives nan, not an error: a report can print "n/a" where a split was empty.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

DEFAULT_CONFIDENCE = 0.95
SIGNIFICANCE_LEVEL = 0.05
# Below this many discordant pairs the chi-square approximation is poor, so McNemar uses the exact binomial.
EXACT_MCNEMAR_BELOW = 25
# Resample index matrices are built in chunks of about this many entries to bound memory.
_CHUNK_ENTRIES = 2_000_000


def bootstrap_interval(
    values: Sequence[float],
    statistic: Callable[..., np.ndarray] = np.mean,
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = 2000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of `statistic` over rows.

    `statistic` must reduce along an `axis` keyword, as np.mean and np.median do: it is called on a
    (resamples, n) matrix with axis=1. No rows give (nan, nan); one row gives (v, v), since every
    resample is that row.
    """
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return (float("nan"), float("nan"))
    if data.size == 1:
        single = float(statistic(data[None, :], axis=1)[0])
        return (single, single)
    replicates = _bootstrap_replicates(data, statistic, resamples, np.random.default_rng(seed))
    return percentile_interval(replicates, confidence)


def _bootstrap_replicates(
    data: np.ndarray, statistic: Callable[..., np.ndarray], resamples: int, rng: np.random.Generator
) -> np.ndarray:
    n = data.size
    chunk = max(1, _CHUNK_ENTRIES // n)
    replicates = []
    for start in range(0, resamples, chunk):
        indices = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        replicates.append(statistic(data[indices], axis=1))
    return np.concatenate(replicates)


def percentile_interval(replicates: np.ndarray, confidence: float) -> tuple[float, float]:
    """The central `confidence` share of bootstrap replicates: (low, high)."""
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail])
    return (float(low), float(high))


def corpus_bootstrap_interval(
    predictions: Sequence[str],
    references: Sequence[str],
    corpus_metric: Callable[[list[str], list[str]], float],
    confidence: float = DEFAULT_CONFIDENCE,
    resamples: int = 500,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of a corpus metric such as `corpus_bleu` or `corpus_chrf`.

    Each resample draws rows with replacement and recomputes the metric on the whole resampled corpus,
    because BLEU and chrF are not means of per-row scores. That costs one metric call per resample,
    hence 500 resamples by default rather than 2000: enough for a report, a little noisier at the ends.
    No rows give (nan, nan); one row gives (v, v).
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references; they pair up by row")
    n = len(predictions)
    if n == 0:
        return (float("nan"), float("nan"))
    if n == 1:
        single = float(corpus_metric(list(predictions), list(references)))
        return (single, single)
    rng = np.random.default_rng(seed)
    replicates = np.empty(resamples)
    for i in range(resamples):
        rows = rng.integers(0, n, size=n)
        replicates[i] = corpus_metric([predictions[r] for r in rows], [references[r] for r in rows])
    return percentile_interval(replicates, confidence)


def paired_bootstrap_test(
    baseline_values: Sequence[float],
    tuned_values: Sequence[float],
    resamples: int = 2000,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
) -> dict[str, float]:
    """Mean of (tuned - baseline) per row, its bootstrap interval and a two-sided p-value.

    The p-value is the share of resampled mean differences on the other side of zero from the observed
    one, doubled and clipped to 1; it is 1 when the observed difference is exactly zero. Its resolution is
    2 / resamples, so 0.0 means "below that", not "impossible". No rows give nan throughout.
    """
    differences = _paired_differences(baseline_values, tuned_values)
    if differences.size == 0:
        nan = float("nan")
        return {"difference": nan, "low": nan, "high": nan, "p_value": nan}
    observed = float(differences.mean())
    if differences.size == 1:
        return {"difference": observed, "low": observed, "high": observed, "p_value": 1.0}
    replicates = _bootstrap_replicates(differences, np.mean, resamples, np.random.default_rng(seed))
    low, high = percentile_interval(replicates, confidence)
    return {"difference": observed, "low": low, "high": high, "p_value": two_sided_p_value(replicates, observed)}


def _paired_differences(baseline_values: Sequence[float], tuned_values: Sequence[float]) -> np.ndarray:
    baseline, tuned = np.asarray(baseline_values, dtype=float), np.asarray(tuned_values, dtype=float)
    if baseline.shape != tuned.shape:
        raise ValueError(
            f"baseline has {baseline.size} rows but tuned has {tuned.size}; a paired test needs both models "
            "scored on the same rows, in the same order"
        )
    return tuned - baseline


def two_sided_p_value(replicates: np.ndarray, observed: float) -> float:
    """Bootstrap p-value of observed against 0: twice the share of replicates on the far side of 0."""
    if observed == 0:
        return 1.0
    crossed = replicates <= 0 if observed > 0 else replicates >= 0
    return float(min(1.0, 2 * crossed.mean()))


def mcnemar_test(baseline_correct: Sequence[bool], tuned_correct: Sequence[bool]) -> dict[str, float | int | str]:
    """McNemar's test on paired right/wrong rows.

    b = rows only the baseline gets right, c = rows only the tuned model gets right. With fewer than 25
    discordant rows the p-value is the exact two-sided binomial test of b against Binomial(b + c, 1/2)
    (statistic = min(b, c)); otherwise the chi-square test with continuity correction,
    (|b - c| - 1)^2 / (b + c) on one degree of freedom.
    """
    baseline, tuned = np.asarray(baseline_correct, dtype=bool), np.asarray(tuned_correct, dtype=bool)
    if baseline.shape != tuned.shape:
        raise ValueError(f"baseline has {baseline.size} rows but tuned has {tuned.size}; McNemar pairs them by row")
    b, c = int(np.sum(baseline & ~tuned)), int(np.sum(~baseline & tuned))
    if b + c < EXACT_MCNEMAR_BELOW:
        statistic, p_value, method = _exact_mcnemar(b, c)
    else:
        statistic, p_value, method = _chi_square_mcnemar(b, c)
    return {"b": b, "c": c, "statistic": statistic, "p_value": p_value, "method": method}


def _exact_mcnemar(b: int, c: int) -> tuple[float, float, str]:
    from scipy.stats import binomtest

    p_value = 1.0 if b + c == 0 else float(binomtest(min(b, c), b + c, 0.5).pvalue)
    return float(min(b, c)), p_value, "exact binomial"


def _chi_square_mcnemar(b: int, c: int) -> tuple[float, float, str]:
    from scipy.stats import chi2

    statistic = (abs(b - c) - 1) ** 2 / (b + c)
    return float(statistic), float(chi2.sf(statistic, df=1)), "chi-square with continuity correction"


def summarize(
    values: Sequence[float], confidence: float = DEFAULT_CONFIDENCE, resamples: int = 2000, seed: int = 0
) -> dict[str, float | int]:
    """Mean of a per-row metric with its bootstrap interval: {"mean", "low", "high", "n"} (mean nan for no rows)."""
    data = np.asarray(values, dtype=float)
    mean = float(data.mean()) if data.size else float("nan")
    low, high = bootstrap_interval(data, confidence=confidence, resamples=resamples, seed=seed)
    return {"mean": mean, "low": low, "high": high, "n": int(data.size)}


def compare(
    baseline_values: Sequence[float],
    tuned_values: Sequence[float],
    binary: bool | None = None,
    resamples: int = 2000,
    seed: int = 0,
) -> dict[str, float | str | bool]:
    """Is the tuned model's per-row score really different from the baseline's?

    Returns the mean difference (tuned - baseline, in the scores' own scale) with its paired bootstrap
    interval, a p-value, the test used and `significant` (p < 0.05). Right/wrong scores (every value 0/1,
    or every value 0/100) use McNemar's test; graded scores (ROUGE, token F1) the paired bootstrap.
    `binary=None` decides from the values; True insists on right/wrong scores and raises otherwise.
    """
    looks_binary = _is_binary(baseline_values, tuned_values)
    if binary and not looks_binary:
        raise ValueError("compare(binary=True) needs right/wrong scores: all values 0 or 1, or all 0 or 100")
    use_mcnemar = looks_binary if binary is None else binary
    bootstrap = paired_bootstrap_test(baseline_values, tuned_values, resamples=resamples, seed=seed)
    if use_mcnemar:
        mcnemar = mcnemar_test(np.asarray(baseline_values) != 0, np.asarray(tuned_values) != 0)
        p_value, test = mcnemar["p_value"], "mcnemar"
    else:
        p_value, test = bootstrap["p_value"], "paired bootstrap"
    return {
        "difference": bootstrap["difference"],
        "low": bootstrap["low"],
        "high": bootstrap["high"],
        "p_value": p_value,
        "test": test,
        "significant": bool(p_value < SIGNIFICANCE_LEVEL),
    }


def _is_binary(*score_lists: Sequence[float]) -> bool:
    seen = set(np.unique(np.concatenate([np.asarray(scores, dtype=float) for scores in score_lists])).tolist())
    return seen <= {0.0, 1.0} or seen <= {0.0, 100.0}
