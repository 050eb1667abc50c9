"""The numbers behind the monitoring page: percentiles, thumbs-up shares with intervals, the A/B test, drift.

Thumbs-up share: the latest rating of each rated reply counts as positive for "up" or 4-5 stars (score >= 0.75),
with a Wilson 95% interval. A/B: a two-proportion z-test (pooled) of each variant against the split's
control (its busiest variant), and Newcombe's interval for the difference. Drift: TF-IDF over character
3-5-grams fitted on the run's training prompts; an incoming prompt is "far" when its cosine similarity to the
nearest training prompt is below FAR_SIMILARITY. The same share is computed for the run's validation prompts
(or, without them, for training prompts against the rest), so the page shows what "normal" looks like.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import stats

POSITIVE_SCORE = 0.75  # up = 1.0, 5 stars = 1.0, 4 stars = 0.75; 3 stars (0.5) is not a thumbs-up
FAR_SIMILARITY = 0.25  # below this cosine to every training prompt a prompt is "far"; paraphrases sit at 0.4-0.8
MAX_DRIFT_ROWS = 5000  # prompts compared per side (a seeded sample beyond that)


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def wilson_interval(positive: int, total: int, confidence: float = 0.95) -> tuple[float, float] | None:
    if total == 0:
        return None
    z = stats.norm.ppf(0.5 + confidence / 2)
    share = positive / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_test(positive_a: int, total_a: int, positive_b: int, total_b: int) -> dict | None:
    """B's share minus A's, Newcombe's 95% interval of that difference, and the two-sided pooled z-test p-value."""
    if total_a == 0 or total_b == 0:
        return None
    share_a, share_b = positive_a / total_a, positive_b / total_b
    pooled = (positive_a + positive_b) / (total_a + total_b)
    spread = math.sqrt(pooled * (1 - pooled) * (1 / total_a + 1 / total_b))
    p_value = 1.0 if spread == 0 else float(2 * stats.norm.sf(abs(share_b - share_a) / spread))
    low_a, high_a = wilson_interval(positive_a, total_a)
    low_b, high_b = wilson_interval(positive_b, total_b)
    difference = share_b - share_a
    low = difference - math.sqrt((share_b - low_b) ** 2 + (high_a - share_a) ** 2)
    high = difference + math.sqrt((high_b - share_b) ** 2 + (share_a - low_a) ** 2)
    return {"difference": difference, "interval": (low, high), "p_value": p_value}


def latest_ratings(feedback: list[dict]) -> dict[str, float]:
    """Each rated request's latest score (feedback rows come in time order)."""
    return {row["request_id"]: row["score"] for row in feedback if row["kind"] == "rating" and row["score"] is not None}


def prompt_text(row: dict) -> str:
    """What the user wrote in a stored request: the non-system messages, or the completion prompt."""
    if row.get("messages"):
        return "\n".join(m.get("content") or "" for m in row["messages"] if m.get("role") != "system")
    return row.get("prompt") or ""


def training_prompts(run_dir: Path, split: str = "train") -> list[str]:
    """The prompt side of a run's prepared split (data/<split>.jsonl), as the data checks see it."""
    from tuneloop.data.text_fields import input_text
    from tuneloop.workspace import read_jsonl

    path = Path(run_dir) / "data" / f"{split}.jsonl"
    if not path.is_file():
        return []
    prompts = []
    for example in read_jsonl(path):
        try:
            prompts.append(input_text(example))
        except (KeyError, TypeError):  # a row shape the checks do not read (e.g. token labels without text)
            continue
    return [p for p in prompts if p.strip()]


def _sample(texts: list[str], size: int) -> list[str]:
    return texts if len(texts) <= size else random.Random(0).sample(texts, size)


def nearest_similarities(queries: list[str], corpus: list[str], skip_self: bool = False) -> np.ndarray:
    """Each query's cosine similarity to its nearest corpus text (TF-IDF, character 3-5-grams)."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    if not queries or not corpus:
        return np.zeros(len(queries))
    vectorizer = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True).fit(corpus)
    corpus_vectors, query_vectors = vectorizer.transform(corpus).T.tocsc(), vectorizer.transform(queries)
    nearest = np.zeros(len(queries))
    for start in range(0, len(queries), 500):  # 500 rows of the similarity matrix at a time
        block = (query_vectors[start : start + 500] @ corpus_vectors).toarray()
        if skip_self:
            block[np.arange(len(block)), np.arange(start, start + len(block))] = 0.0
        nearest[start : start + len(block)] = block.max(axis=1)
    return nearest


def prompt_drift(incoming: list[str], training: list[str], validation: list[str], threshold: float) -> dict:
    """How far incoming prompts are from the training prompts, with the same measure on held-out training data."""
    incoming, training = _sample(incoming, MAX_DRIFT_ROWS), _sample(training, MAX_DRIFT_ROWS)
    nearest = nearest_similarities(incoming, training)
    if validation:
        reference = nearest_similarities(_sample(validation, MAX_DRIFT_ROWS), training)
        reference_name = "validation prompts"
    else:
        reference = nearest_similarities(training, training, skip_self=True)
        reference_name = "training prompts (each against the others)"
    share_far = float(np.mean(nearest < FAR_SIMILARITY))
    incoming_lengths, training_lengths = [len(t) for t in incoming], [len(t) for t in training]
    length_test = stats.ks_2samp(incoming_lengths, training_lengths) if len(incoming) > 1 else None
    languages = _language_shift(incoming, training)
    alerts = []
    if share_far > threshold:
        alerts.append(f"{share_far:.0%} of prompts are far from every training prompt (threshold {threshold:.0%})")
    if languages["other_share_incoming"] - languages["other_share_training"] > threshold:
        alerts.append(f"{languages['other_share_incoming']:.0%} of prompts are not in {languages['main']} "
                      f"(training: {languages['other_share_training']:.0%})")
    median_ratio = float(np.median(incoming_lengths) / max(1.0, float(np.median(training_lengths))))
    if length_test is not None and length_test.pvalue < 0.001 and not 0.5 <= median_ratio <= 2.0:
        alerts.append(f"prompt length shifted: median {np.median(incoming_lengths):.0f} characters vs "
                      f"{np.median(training_lengths):.0f} in training (KS p={length_test.pvalue:.1g})")
    return {"prompts": len(incoming), "training": len(training), "nearest": nearest.tolist(),
            "reference": reference.tolist(), "reference_name": reference_name, "share_far": share_far,
            "reference_share_far": float(np.mean(reference < FAR_SIMILARITY)) if len(reference) else None,
            "median_length": float(np.median(incoming_lengths)), "training_median_length":
            float(np.median(training_lengths)), "length_p": None if length_test is None else float(length_test.pvalue),
            "languages": languages, "alerts": alerts}


@lru_cache(maxsize=1)
def _fast_detector():
    """lingua in low-accuracy mode: ~0.2 s to load instead of several seconds (measured in data/language.py).

    It is worse on single short rows, but drift compares shares over many prompts, where that washes out.
    """
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    from tuneloop.data.language import COMMON_LANGUAGES

    codes = [IsoCode639_1.from_str(code) for code in COMMON_LANGUAGES]
    return LanguageDetectorBuilder.from_iso_codes_639_1(*codes).with_low_accuracy_mode().build()


def detect_prompt_languages(texts: list[str], min_chars: int = 20) -> list[str | None]:
    """The ISO 639-1 code of each text of at least min_chars characters (None for shorter or undecided ones)."""
    long_enough = [t for t in texts if len(t.strip()) >= min_chars]
    found = iter(_fast_detector().detect_languages_in_parallel_of(long_enough)) if long_enough else iter(())
    codes = []
    for text in texts:
        language = next(found) if len(text.strip()) >= min_chars else None
        codes.append(language.iso_code_639_1.name.lower() if language is not None else None)
    return codes


def _language_shift(incoming: list[str], training: list[str]) -> dict:
    incoming_codes = [c for c in detect_prompt_languages(incoming) if c]
    training_codes = [c for c in detect_prompt_languages(training) if c]
    main = Counter(training_codes).most_common(1)[0][0] if training_codes else "en"

    def other(codes: list[str]) -> float:
        return sum(c != main for c in codes) / len(codes) if codes else 0.0

    return {"main": main, "incoming": dict(Counter(incoming_codes).most_common(6)),
            "other_share_incoming": other(incoming_codes), "other_share_training": other(training_codes)}
