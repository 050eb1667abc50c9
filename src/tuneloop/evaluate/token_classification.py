"""Token-classification (NER) metrics from seqeval, the word-lexicon baseline tagger, and bootstrap intervals on F1.

Entity scores are seqeval's default (conlleval-compatible) mode: an entity is right only when its type
and its exact word span both match, and an I-TYPE that does not continue an entity starts one. All
scores are percentages (0-100), like the classification and generation metrics:
    entity_f1, entity_precision, entity_recall   micro-averaged over every entity
    entity_f1_macro                              the mean of the per-type F1 scores
    token_accuracy                               share of words whose tag is right (O included, so it
                                                 runs high; entity F1 is the number to read)
The baseline is the tagger a practitioner would try first: each word gets the tag it carried most often
in the training split (ties to the alphabetically first tag), a word never seen in training gets O.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np

from tuneloop.data.iob import OUTSIDE
from tuneloop.evaluate.stats import DEFAULT_CONFIDENCE, SIGNIFICANCE_LEVEL, percentile_interval, two_sided_p_value

SUMMARY_METRICS = ("entity_f1", "entity_precision", "entity_recall", "entity_f1_macro", "token_accuracy")
# Resample index matrices are built in chunks of about this many entries to bound memory.
_CHUNK_ENTRIES = 4_000_000


def entity_spans(tags: list[str]) -> set[tuple[str, int, int]]:
    """The entities of one sentence as (type, first word, last word), read the way seqeval reads them."""
    from seqeval.metrics.sequence_labeling import get_entities

    return set(get_entities(list(tags)))


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict[str, Any]:
    """Micro and per-type entity precision/recall/F1, macro F1 and token accuracy, plus per-sentence counts.

    `counts` holds, per sentence, (correct entities, predicted entities, gold entities): what
    `f1_intervals` resamples.
    """
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

    if len(gold) != len(predicted):
        raise ValueError(f"{len(gold)} gold sentences but {len(predicted)} predicted; they pair up by sentence")
    for index, (truth, guess) in enumerate(zip(gold, predicted, strict=True)):
        if len(truth) != len(guess):
            raise ValueError(f"sentence {index}: {len(truth)} gold tags but {len(guess)} predicted; one tag per word")
    if not gold:
        return {**dict.fromkeys(SUMMARY_METRICS, 0.0), "per_type": {}, "counts": []}
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    per_type = {
        kind: {"precision": 100 * float(found["precision"]), "recall": 100 * float(found["recall"]),
               "f1": 100 * float(found["f1-score"]), "support": int(found["support"])}
        for kind, found in report.items() if not kind.endswith(" avg")
    }
    counts = []
    for truth, guess in zip(gold, predicted, strict=True):
        true_spans, guessed_spans = entity_spans(truth), entity_spans(guess)
        counts.append((len(true_spans & guessed_spans), len(guessed_spans), len(true_spans)))
    return {
        "entity_f1": 100 * float(f1_score(gold, predicted, zero_division=0)),
        "entity_precision": 100 * float(precision_score(gold, predicted, zero_division=0)),
        "entity_recall": 100 * float(recall_score(gold, predicted, zero_division=0)),
        "entity_f1_macro": 100 * float(report["macro avg"]["f1-score"]) if per_type else 0.0,
        "token_accuracy": 100 * float(accuracy_score(gold, predicted)),
        "per_type": per_type,
        "counts": counts,
    }


def most_frequent_tags(rows: list[dict]) -> dict[str, str]:
    """Each training word's most frequent tag (ties to the alphabetically first): the baseline's lexicon."""
    seen: dict[str, Counter] = defaultdict(Counter)
    for row in rows:
        for word, tag in zip(row["tokens"], row["tags"], strict=True):
            seen[word][tag] += 1
    return {word: min(tags, key=lambda tag: (-tags[tag], tag)) for word, tags in seen.items()}


def lexicon_tags(lexicon: dict[str, str], words: list[str]) -> list[str]:
    """The baseline's tags for one sentence: each word's training tag, O for a word training never showed."""
    return [lexicon.get(word, OUTSIDE) for word in words]


def f1_from_counts(correct, predicted, gold):
    """Micro F1 (0-100) from summed counts; arrays give one F1 per entry. No entities at all gives 0, as in seqeval."""
    denominator = np.asarray(predicted + gold, dtype=float)
    return np.divide(200.0 * np.asarray(correct, dtype=float), denominator,
                     out=np.zeros_like(denominator), where=denominator > 0)


def f1_intervals(baseline_counts: list[tuple[int, int, int]], tuned_counts: list[tuple[int, int, int]],
                 resamples: int = 2000, seed: int = 0, confidence: float = DEFAULT_CONFIDENCE) -> dict:
    """Percentile bootstrap over sentences for the entity F1 of each side, and a paired test of the difference.

    Entity F1 is not a mean of per-sentence scores, so each resample sums the per-sentence counts of the
    drawn sentences and recomputes F1 from them, for both sides on the same draw (the pairing). The
    p-value is the share of resampled differences on the other side of zero, doubled (as in
    tuneloop.evaluate.stats.paired_bootstrap_test).
    """
    baseline, tuned = np.asarray(baseline_counts, dtype=float), np.asarray(tuned_counts, dtype=float)
    if baseline.shape != tuned.shape:
        raise ValueError(f"baseline has {len(baseline)} sentences but tuned has {len(tuned)}; pair them by sentence")
    if len(tuned) < 2:  # nothing to resample: no sentence gives nan, one gives its own scores
        sides = {name: float(f1_from_counts(*counts.sum(axis=0))) if len(counts) else float("nan")
                 for name, counts in (("baseline", baseline), ("tuned", tuned))}
        difference = sides["tuned"] - sides["baseline"]
        return {"intervals": {name: [value, value] for name, value in sides.items()},
                "comparison": {"difference": difference, "low": difference, "high": difference, "p_value": 1.0,
                               "test": "paired bootstrap", "significant": False}}
    observed = float(f1_from_counts(*tuned.sum(axis=0)) - f1_from_counts(*baseline.sum(axis=0)))
    rng = np.random.default_rng(seed)
    n = len(tuned)
    chunk = max(1, _CHUNK_ENTRIES // n)
    baseline_f1, tuned_f1 = [], []
    for start in range(0, resamples, chunk):
        draws = rng.integers(0, n, size=(min(chunk, resamples - start), n))
        for counts, out in ((baseline, baseline_f1), (tuned, tuned_f1)):
            summed = counts[draws].sum(axis=1)  # (draws, 3): correct, predicted, gold
            out.append(f1_from_counts(summed[:, 0], summed[:, 1], summed[:, 2]))
    baseline_f1, tuned_f1 = np.concatenate(baseline_f1), np.concatenate(tuned_f1)
    differences = tuned_f1 - baseline_f1
    low, high = percentile_interval(differences, confidence)
    p_value = two_sided_p_value(differences, observed)
    return {
        "intervals": {"baseline": list(percentile_interval(baseline_f1, confidence)),
                      "tuned": list(percentile_interval(tuned_f1, confidence))},
        "comparison": {"difference": observed, "low": low, "high": high, "p_value": p_value,
                       "test": "paired bootstrap", "significant": bool(p_value < SIGNIFICANCE_LEVEL)},
    }


def entities_text(words: list[str], tags: list[str]) -> str:
    """The entities of a sentence for people to read, e.g. 'EU (ORG); German (MISC)'."""
    spans = sorted(entity_spans(tags), key=lambda span: (span[1], span[2]))
    if not spans:
        return "(no entities)"
    return "; ".join(f"{' '.join(words[first:last + 1])} ({kind})" for kind, first, last in spans)
