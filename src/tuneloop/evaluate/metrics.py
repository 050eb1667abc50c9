"""Generation metrics on held-out rows (0-100 scale): exact match, contains-answer, SQuAD token F1 (the word matches
of tuneloop.data.text_match), ROUGE-1/2/L, corpus BLEU and chrF; perplexity from a mean token loss; reply lengths.

ROUGE comes from rouge-score and BLEU/chrF from sacrebleu, computed locally: `evaluate.load` would
fetch metric code from a hub, which a machine without network cannot do.

Per-row metrics (exact_match, contains_answer, token_f1, rouge_1, rouge_2, rouge_l) give one score per
row, so `tuneloop.evaluate.stats` can put a bootstrap interval on their mean; corpus metrics (bleu,
chrf) are defined over the whole corpus and give one number.
"""

from __future__ import annotations

import math
import statistics
from functools import cache

from tuneloop.data.text_match import contains_answer, exact_match, token_f1

# Metric name in configs -> rouge-score's name for it.
_ROUGE_TYPES = {"rouge_1": "rouge1", "rouge_2": "rouge2", "rouge_l": "rougeL"}
PER_ROW_METRICS = ("exact_match", "contains_answer", "token_f1", *_ROUGE_TYPES)
CORPUS_METRICS = ("bleu", "chrf")

# Same cap as the validation loss: exp(50) is already meaningless, and exp(800) overflows.
_MAX_LOSS_FOR_PERPLEXITY = 50.0


def rouge_scores(predictions: list[str], references: list[str], metrics: list[str]) -> dict[str, list[float]]:
    """Per-row ROUGE F-measures (0-100) for the requested names among rouge_1, rouge_2, rouge_l, in one pass."""
    wanted = tuple(name for name in _ROUGE_TYPES if name in metrics)
    scores: dict[str, list[float]] = {name: [] for name in wanted}
    if not wanted:
        return scores
    scorer = _rouge_scorer(tuple(_ROUGE_TYPES[name] for name in wanted))
    for prediction, reference in zip(predictions, references, strict=True):
        row = scorer.score(reference, prediction)
        for name in wanted:
            scores[name].append(100 * row[_ROUGE_TYPES[name]].fmeasure)
    return scores


@cache
def _rouge_scorer(rouge_types: tuple[str, ...]):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(rouge_types), use_stemmer=True)


def rouge_1(predictions: list[str], references: list[str]) -> list[float]:
    return rouge_scores(predictions, references, ["rouge_1"])["rouge_1"]


def rouge_2(predictions: list[str], references: list[str]) -> list[float]:
    return rouge_scores(predictions, references, ["rouge_2"])["rouge_2"]


def rouge_l(predictions: list[str], references: list[str]) -> list[float]:
    return rouge_scores(predictions, references, ["rouge_l"])["rouge_l"]


def corpus_bleu(predictions: list[str], references: list[str]) -> float:
    """sacrebleu corpus BLEU (0-100); 0.0 for no rows, where sacrebleu itself would raise."""
    import sacrebleu

    return sacrebleu.corpus_bleu(predictions, [references]).score if predictions else 0.0


def corpus_chrf(predictions: list[str], references: list[str]) -> float:
    """sacrebleu corpus chrF (character n-gram F-score, 0-100); 0.0 for no rows."""
    import sacrebleu

    return sacrebleu.corpus_chrf(predictions, [references]).score if predictions else 0.0


def perplexity_from_loss(mean_loss: float) -> float:
    """exp(mean cross-entropy per token, in nats), with the loss capped at 50 so it never overflows."""
    return math.exp(min(mean_loss, _MAX_LOSS_FOR_PERPLEXITY))


def generation_scores(
    predictions: list[str], references: list[str], answers: list[str], metrics: list[str]
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Corpus-level scores (0-100) and, for per-row metrics, the per-row values behind them.

    Known names: exact_match, contains_answer, token_f1, rouge_1, rouge_2, rouge_l (per row; the total is
    the mean, 0.0 for no rows) and bleu, chrf (corpus totals only). Other names are ignored here.
    """
    per_row: dict[str, list[float]] = {}
    if "exact_match" in metrics:
        per_row["exact_match"] = [100 * s for s in exact_match(predictions, references)]
    if "contains_answer" in metrics:
        per_row["contains_answer"] = [100 * s for s in contains_answer(predictions, answers)]
    if "token_f1" in metrics:
        per_row["token_f1"] = token_f1(predictions, references)
    per_row.update(rouge_scores(predictions, references, metrics))
    totals = {name: sum(values) / len(values) if values else 0.0 for name, values in per_row.items()}
    if "bleu" in metrics:
        totals["bleu"] = corpus_bleu(predictions, references)
    if "chrf" in metrics:
        totals["chrf"] = corpus_chrf(predictions, references)
    return totals, per_row


def length_statistics(references: list[str], replies: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """Mean and median length in words (whitespace-separated) of the references and of each side's replies,
    with each side's mean over the references' mean: above 1 the replies run long, below 1 short.

    ROUGE F-measures reward a summary of about the reference's length, so these say whether a change
    in ROUGE came with shorter or longer summaries.
    """
    def described(texts: list[str]) -> dict[str, float]:
        words = [len(text.split()) for text in texts]
        return {"mean_words": statistics.fmean(words) if words else 0.0,
                "median_words": float(statistics.median(words)) if words else 0.0}

    found = {"reference": described(references)}
    reference_mean = found["reference"]["mean_words"]
    for side, texts in replies.items():
        found[side] = described(texts)
        found[side]["ratio_to_reference"] = found[side]["mean_words"] / reference_mean if reference_mean else None
    return found
