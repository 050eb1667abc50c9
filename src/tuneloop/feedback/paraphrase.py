"""Paraphrase the questions of users' corrections into extra training rows, so a correction generalizes.

One correction per fact teaches the model that one wording; measured, unseen paraphrases of corrected facts went
only 0.00 -> 0.13 after a cycle. `paraphrase_corrections` writes, for each correction row (a chat row whose last
message is the user's correction), up to `count` copies whose last user question is reworded by a generator
(tuneloop.data.augment's paraphrase prompt) and whose reply is the correction unchanged.

A paraphrase is dropped, and counted by reason, when it is blank, the same as the question after normalization,
more than MAX_LENGTH_RATIO times longer than the question (a small model rambling or answering), a repeat of a
paraphrase already kept for that row, or a copy of a protected question (the gate's held-out feedback, the frozen
validation and test prompts): training on those would make the gate's numbers a lie. The original row is always
kept.

Copy k rewords copy k-1's kept text (the question itself while none is kept): a local generator decodes greedily,
so asking it the same prompt again would only repeat its first answer.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Sequence

from tuneloop.data.augment import PARAPHRASE_PROMPT
from tuneloop.data.dedup import near_matches_between, normalize_text
from tuneloop.data.text_generator import TextGenerator
from tuneloop.errors import DataError
from tuneloop.feedback.export import DEFAULT_LEAK_THRESHOLD, user_text

MAX_LENGTH_RATIO = 3.0  # a reworded question is about as long as the question; 3x longer is something else
PARAPHRASE_METHOD = "paraphrase"  # the augmentation tag's method, as tuneloop.data.augment writes it
DROP_REASONS = ("blank", "same as the question", f"over {MAX_LENGTH_RATIO:g}x longer", "repeats a kept paraphrase",
                "copies a held-out or test question")


def paraphrase_corrections(rows: Sequence[dict], count: int, generator: TextGenerator,
                           protected: Sequence[str] = ()) -> tuple[list[tuple[int, dict]], dict]:
    """(source index, paraphrased copy) for each kept paraphrase of rows, and the counts of what happened.

    `protected` holds user texts (tuneloop.feedback.export.user_text) no copy may match or nearly match.
    Each copy carries `"augmented": {"method": "paraphrase", "source_row": index + 1}`; the caller renumbers
    source_row once the rows have their final order.
    """
    questions = [_last_question(row) for row in rows]
    kept: list[list[str]] = [[] for _ in rows]
    dropped: Counter = Counter()
    for _ in range(count):
        inputs = [texts[-1] if texts else question for question, texts in zip(questions, kept, strict=True)]
        replies = generator.generate([PARAPHRASE_PROMPT.format(text=text) for text in inputs])
        if len(replies) != len(inputs):
            raise DataError(f"the paraphrase generator answered {len(replies)} of {len(inputs)} prompts.")
        for index, reply in enumerate(replies):
            reason = drop_reason(questions[index], _cleaned(reply), kept[index])
            if reason:
                dropped[reason] += 1
            else:
                kept[index].append(_cleaned(reply))
    copies = [(index, _with_question(rows[index], text, index)) for index, texts in enumerate(kept) for text in texts]
    copies, leaked = _drop_protected(copies, protected)
    dropped[DROP_REASONS[4]] += leaked
    counts = {"rows": len(rows), "per_row": count, "asked": count * len(rows), "kept": len(copies),
              "dropped": {reason: dropped[reason] for reason in DROP_REASONS if dropped[reason]}}
    return copies, counts


def drop_reason(question: str, paraphrase: str, kept: Sequence[str] = ()) -> str | None:
    """Why a paraphrase of a question is no good (one of DROP_REASONS[:4]), or None to keep it."""
    if not paraphrase.strip():
        return DROP_REASONS[0]
    normalized = normalize_text(paraphrase)
    if normalized == normalize_text(question):
        return DROP_REASONS[1]
    if len(paraphrase) > MAX_LENGTH_RATIO * max(len(question.strip()), 1):
        return DROP_REASONS[2]
    if normalized in {normalize_text(text) for text in kept}:
        return DROP_REASONS[3]
    return None


def describe(counts: dict) -> str:
    """One console line: how many paraphrases were asked for, kept and dropped, and why."""
    dropped = sum(counts["dropped"].values())
    why = ", ".join(f"{number} {reason}" for reason, number in counts["dropped"].items())
    return (f"retrain: paraphrased {counts['rows']} correction question(s) {counts['per_row']} time(s): "
            f"{counts['kept']} kept, {dropped} dropped" + (f" ({why})" if why else ""))


def _last_question(row: dict) -> str:
    messages = row.get("messages") or []
    users = [message for message in messages if message.get("role") == "user"]
    if not users or messages[-1].get("role") != "assistant" or not isinstance(users[-1].get("content"), str):
        raise DataError("a correction row must be a chat row with a user question and the correction as its last "
                        f"(assistant) message; got {str(row)[:200]}")
    return users[-1]["content"]


def _cleaned(reply: str) -> str:
    text = reply.strip()
    # Small models often quote what they reword; the quotes are not part of the question.
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1].strip()
    return text


def _with_question(row: dict, question: str, index: int) -> dict:
    new = copy.deepcopy(row)
    last_user = max(i for i, message in enumerate(new["messages"]) if message.get("role") == "user")
    new["messages"][last_user]["content"] = question
    new["augmented"] = {"method": PARAPHRASE_METHOD, "source_row": index + 1}
    return new


def _drop_protected(copies: list[tuple[int, dict]], protected: Sequence[str]) -> tuple[list[tuple[int, dict]], int]:
    protected = [text for text in protected if text.strip()]
    if not copies or not protected:
        return copies, 0
    texts = [user_text(row["messages"]) for _, row in copies]
    exact = {normalize_text(text) for text in protected}
    leaked = {index for index, text in enumerate(texts) if normalize_text(text) in exact}
    leaked |= {pair.first for pair in near_matches_between(texts, list(protected), DEFAULT_LEAK_THRESHOLD)}
    return [item for index, item in enumerate(copies) if index not in leaked], len(leaked)


def local_paraphraser(model: str, device: str, rows: Sequence[dict], batch_size: int = 8) -> TextGenerator:
    """A LocalGenerator on `model` (the served run's base), with room for a paraphrase as long as the filter allows."""
    from tuneloop.models.generators import LocalGenerator

    longest = max((len(_last_question(row)) for row in rows), default=0)
    # Text runs 2 or more characters per token, so this covers every paraphrase the length rule would keep.
    max_new_tokens = min(512, max(32, round(MAX_LENGTH_RATIO * longest / 2)))
    return LocalGenerator(model, max_new_tokens=max_new_tokens, batch_size=batch_size, device=device)
