"""How a reply matches a reference word for word: SQuAD normalization, exact match, contains-answer, token F1.

Plain string functions (0-100 per row) that evaluation (tuneloop.evaluate.metrics), the self-distillation
guard and the feedback gate share.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter

# Punctuation goes, except between digits: "14.50" must not become "14 50" (which would contain "14").
_PUNCTUATION = re.compile(f"(?<!\\d)[{re.escape(string.punctuation)}]|[{re.escape(string.punctuation)}](?!\\d)")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """SQuAD-style: Unicode NFKC, lower case, no punctuation or articles, single spaces."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = _ARTICLES.sub(" ", _PUNCTUATION.sub(" ", text))
    return " ".join(text.split())


def exact_match(predictions: list[str], references: list[str]) -> list[float]:
    return [float(normalize(p) == normalize(r)) for p, r in zip(predictions, references, strict=True)]


def contains_answer(predictions: list[str], answers: list[str]) -> list[float]:
    """1 when the normalized answer appears, as whole words, inside the normalized prediction."""
    scores = []
    for prediction, answer in zip(predictions, answers, strict=True):
        needle = normalize(answer)
        scores.append(float(bool(needle) and f" {needle} " in f" {normalize(prediction)} "))
    return scores


def token_f1(predictions: list[str], references: list[str]) -> list[float]:
    """SQuAD token F1 per row (0-100): F1 of the bag-of-tokens overlap after `normalize`.

    As in the SQuAD script, a row where either side normalizes to nothing scores 100 if both do, else 0.
    """
    return [_token_f1(p, r) for p, r in zip(predictions, references, strict=True)]


def _token_f1(prediction: str, reference: str) -> float:
    predicted_tokens, reference_tokens = normalize(prediction).split(), normalize(reference).split()
    if not predicted_tokens or not reference_tokens:
        return 100.0 * (predicted_tokens == reference_tokens)
    overlap = sum((Counter(predicted_tokens) & Counter(reference_tokens)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted_tokens), overlap / len(reference_tokens)
    return 100 * 2 * precision * recall / (precision + recall)
