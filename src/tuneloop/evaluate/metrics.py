"""Generation metrics on held-out rows: exact match, contains-answer, ROUGE-L and BLEU (0-100 scale).

ROUGE comes from rouge-score and BLEU from sacrebleu, computed locally: `evaluate.load` would
fetch metric code from a hub, which a machine without network cannot do.
"""

from __future__ import annotations

import re
import string
import unicodedata

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


def rouge_l(predictions: list[str], references: list[str]) -> list[float]:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return [100 * scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references, strict=True)]


def corpus_bleu(predictions: list[str], references: list[str]) -> float:
    import sacrebleu

    return sacrebleu.corpus_bleu(predictions, [references]).score


def generation_scores(
    predictions: list[str], references: list[str], answers: list[str], metrics: list[str]
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Corpus-level scores (0-100) and, for per-row metrics, the per-row values behind them."""
    per_row: dict[str, list[float]] = {}
    if "exact_match" in metrics:
        per_row["exact_match"] = [100 * s for s in exact_match(predictions, references)]
    if "contains_answer" in metrics:
        per_row["contains_answer"] = [100 * s for s in contains_answer(predictions, answers)]
    if "rouge_l" in metrics:
        per_row["rouge_l"] = rouge_l(predictions, references)
    totals = {name: sum(values) / len(values) if values else 0.0 for name, values in per_row.items()}
    if "bleu" in metrics:
        totals["bleu"] = corpus_bleu(predictions, references)
    return totals, per_row
