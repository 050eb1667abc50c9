"""Multiple-choice benchmarks (the forgetting check): ARC, HellaSwag, PIQA or generic files, scored like lm-eval.

Each question is a context and a few choices; the model's answer is the choice whose continuation
(" " + choice) gets the highest summed log-likelihood given the context (`acc`), or the highest
log-likelihood per character of the choice (`acc_norm`). Prompts, tokenization at the
context/continuation boundary and both accuracies follow EleutherAI's lm-evaluation-harness, so the
numbers agree with its `arc_easy`, `hellaswag` and `piqa` tasks (checked by
benchmarks/mc_vs_lm_eval.py).

Formats (one JSON object per line; `auto` looks at the first row):
    arc        {"question": {"stem", "choices": [{"label", "text"}]}, "answerKey"}  (AI2's release), or
               {"question", "choices": {"label": [...], "text": [...]}, "answerKey"}  (the HF ai2_arc export)
    hellaswag  {"activity_label", "ctx_a", "ctx_b" (or "ctx"), "endings", "label"}
    piqa       {"goal", "sol1", "sol2", "label"}
    mc         {"question", "choices", "answer"}: answer is a 0-based index, the choice's text or a letter
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from tuneloop.data.batching import padded_batch
from tuneloop.data.load import read_rows
from tuneloop.data.rows import BadRow
from tuneloop.errors import DataError

FORMATS = ("arc", "hellaswag", "piqa", "mc")
CONTINUATION_DELIMITER = " "  # lm-eval's default target_delimiter, put before every choice
DEFAULT_MAX_LENGTH = 2048  # lm-eval's fallback when the model config names no context size
_MAX_LISTED_PROBLEMS = 10


@dataclass(frozen=True)
class MCQuestion:
    context: str  # the full prompt, e.g. "Question: ...\nAnswer:"
    choices: list[str]  # choice texts without the leading delimiter
    answer: int  # index of the correct choice


class _RowProblem(Exception):
    """A row that cannot become a question; the loader adds the row's file:line."""


# ---------------------------------------------------------------- loading


def load_questions(path: str | Path, fmt: str = "auto", limit: int | None = None) -> list[MCQuestion]:
    """The questions of a jsonl file (the first `limit` of them); every bad row is listed in one DataError."""
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise DataError(f"unknown multiple-choice format {fmt!r}; use one of auto, {', '.join(FORMATS)}.")
    parse = _PARSERS[fmt]
    questions: list[MCQuestion] = []
    problems: list[str] = []
    for row in read_rows(path):
        if limit is not None and len(questions) + len(problems) >= limit:
            break
        if isinstance(row, BadRow):
            problems.append(str(row))
            continue
        try:
            questions.append(parse(row.fields))
        except _RowProblem as exc:
            problems.append(f"{row.where}: {exc} (format {fmt})")
    if problems:
        raise DataError(_problems_message(path, problems))
    if not questions:
        raise DataError(f"{path}: no questions in the file.")
    return questions


def detect_format(path: str | Path) -> str:
    """The format of a file, from the fields of its first row."""
    for row in read_rows(path):
        if isinstance(row, BadRow):
            raise DataError(f"{row}; cannot detect the multiple-choice format from it.")
        fields = row.fields
        if "answerKey" in fields:
            return "arc"
        if "endings" in fields:
            return "hellaswag"
        if {"goal", "sol1", "sol2"} <= fields.keys():
            return "piqa"
        if {"question", "choices", "answer"} <= fields.keys():
            return "mc"
        raise DataError(
            f"{row.where}: cannot tell the multiple-choice format from the fields {', '.join(sorted(fields))}. "
            "Expected ARC (question, answerKey), HellaSwag (ctx_a, ctx_b, endings, label), PIQA (goal, sol1, sol2, "
            "label) or generic (question, choices, answer); or pass the format explicitly."
        )
    raise DataError(f"{path}: no questions in the file.")


def _problems_message(path: str | Path, problems: list[str]) -> str:
    listed = "\n".join(f"  {problem}" for problem in problems[:_MAX_LISTED_PROBLEMS])
    more = len(problems) - _MAX_LISTED_PROBLEMS
    suffix = f"\n  ... and {more} more" if more > 0 else ""
    return f"{path}: {len(problems)} row(s) are not usable multiple-choice questions:\n{listed}{suffix}"


def _text(fields: dict, key: str) -> str:
    value = fields.get(key)
    if not isinstance(value, str) or not value.strip():
        raise _RowProblem(f"'{key}' must be a non-empty string, got {value!r}")
    return value


def _texts(value: object, key: str) -> list[str]:
    if not isinstance(value, list) or len(value) < 2:
        raise _RowProblem(f"'{key}' must be a list of at least two choices, got {value!r}")
    if not all(isinstance(item, str) and item.strip() for item in value):
        raise _RowProblem(f"'{key}' must hold non-empty strings, got {value!r}")
    return value


def _index(value: object, key: str, count: int) -> int:
    """A 0-based answer index; digit strings count too, as HellaSwag stores its label as "2"."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < count:
        raise _RowProblem(f"'{key}' must be a choice index from 0 to {count - 1}, got {value!r}")
    return value


def _arc_question(fields: dict) -> MCQuestion:
    question = fields.get("question")
    if isinstance(question, dict):  # AI2's release
        stem = _text(question, "stem")
        entries = question.get("choices")
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise _RowProblem(f"'question.choices' must be a list of {{label, text}} objects, got {entries!r}")
        labels = [str(entry.get("label")) for entry in entries]
        texts = _texts([entry.get("text") for entry in entries], "question.choices[].text")
    elif isinstance(question, str):  # the HF ai2_arc export
        stem = _text(fields, "question")
        choices = fields.get("choices")
        if not isinstance(choices, dict):
            raise _RowProblem(f"'choices' must be an object {{label: [...], text: [...]}}, got {choices!r}")
        labels = [str(label) for label in choices.get("label") or []]
        texts = _texts(choices.get("text"), "choices.text")
    else:
        raise _RowProblem(f"'question' must be an object with stem and choices (or a string), got {question!r}")
    answer_key = str(fields.get("answerKey")).strip()
    # The key is a letter or a digit, whichever the labels use; lm-eval looks it up among the labels.
    if len(labels) != len(texts) or answer_key not in labels:
        raise _RowProblem(f"answerKey {answer_key!r} is not one of the choice labels {', '.join(labels)}")
    return MCQuestion(f"Question: {stem}\nAnswer:", texts, labels.index(answer_key))


def hellaswag_preprocess(text: str) -> str:
    """lm-eval's HellaSwag clean-up: drop WikiHow's bracketed artifacts and double spaces."""
    text = text.strip()
    text = text.replace(" [title]", ". ")
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def _hellaswag_question(fields: dict) -> MCQuestion:
    if "ctx_a" in fields:
        # str.capitalize also lowercases the rest; lm-eval does exactly this, so we do too.
        context = _text(fields, "ctx_a") + " " + str(fields.get("ctx_b") or "").capitalize()
    else:
        context = _text(fields, "ctx")
    label = fields.get("activity_label")
    if isinstance(label, str) and label:
        context = f"{label}: {context}"
    endings = [hellaswag_preprocess(ending) for ending in _texts(fields.get("endings"), "endings")]
    if not all(endings):
        raise _RowProblem(f"an ending is empty once its [bracketed] artifacts are removed: {fields['endings']!r}")
    answer = _index(fields.get("label"), "label", len(endings))
    return MCQuestion(hellaswag_preprocess(context), endings, answer)


def _piqa_question(fields: dict) -> MCQuestion:
    goal = _text(fields, "goal")
    solutions = [_text(fields, "sol1"), _text(fields, "sol2")]
    return MCQuestion(f"Question: {goal}\nAnswer:", solutions, _index(fields.get("label"), "label", 2))


def _mc_question(fields: dict) -> MCQuestion:
    question = _text(fields, "question")
    choices = _texts(fields.get("choices"), "choices")
    return MCQuestion(f"Question: {question}\nAnswer:", choices, _mc_answer(fields.get("answer"), choices))


def _mc_answer(answer: object, choices: list[str]) -> int:
    """An index, the text of a choice, or a letter (A = first choice); the text wins over a letter."""
    if isinstance(answer, str):
        if answer in choices:
            return choices.index(answer)
        letter = answer.strip().upper()
        if len(letter) == 1 and "A" <= letter < chr(ord("A") + len(choices)):
            return ord(letter) - ord("A")
        raise _RowProblem(
            f"'answer' {answer!r} is neither one of the choices nor a letter A-{chr(ord('A') + len(choices) - 1)}"
        )
    return _index(answer, "answer", len(choices))


_PARSERS: dict[str, Callable[[dict], MCQuestion]] = {
    "arc": _arc_question,
    "hellaswag": _hellaswag_question,
    "piqa": _piqa_question,
    "mc": _mc_question,
}


# ---------------------------------------------------------------- scoring


@dataclass(frozen=True)
class _Request:
    question: int
    choice: int
    context_ids: list[int]
    continuation_ids: list[int]


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Token ids of context and continuation, split the way lm-eval's HF model does.

    Trailing spaces of the context move to the continuation (" Paris" is one token, "Paris" after a
    space is another); then context+continuation is encoded whole and split at the context's length,
    so the continuation is tokenized as it would appear in running text.
    """
    trailing = len(context) - len(context.rstrip())
    if trailing:
        context, continuation = context[:-trailing], context[-trailing:] + continuation
    if not context:  # lm-eval conditions on BOS (or EOS) when there is no context
        prefix = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        return [prefix], tokenizer.encode(continuation, add_special_tokens=False)
    whole = tokenizer.encode(context + continuation)
    context_ids = tokenizer.encode(context)
    return context_ids, whole[len(context_ids) :]


@torch.inference_mode()
def choice_loglikelihoods(model, tokenizer, questions: list[MCQuestion], batch_size: int = 16) -> list[list[float]]:
    """Summed log-probability of each choice's continuation given its context: one list per question."""
    requests = _build_requests(tokenizer, questions, _max_length(model))
    scores = [[0.0] * len(q.choices) for q in questions]
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # Longest first, as lm-eval does: similar lengths share a batch and memory trouble shows at once.
    order = sorted(requests, key=lambda r: -(len(r.context_ids) + len(r.continuation_ids)))
    was_training = model.training
    model.eval()
    try:
        with tqdm(total=len(order), desc="multiple choice", unit="choice", dynamic_ncols=True, leave=False) as bar:
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                for request, value in zip(batch, _score_batch(model, batch, pad_id, device), strict=True):
                    scores[request.question][request.choice] = value
                bar.update(len(batch))
    finally:
        model.train(was_training)
    return scores


def score_multiple_choice(model, tokenizer, questions: list[MCQuestion], batch_size: int = 16) -> dict:
    """acc and acc_norm in percent, with per-question correctness (for paired tests and bootstrap intervals)."""
    if not questions:
        raise ValueError("no questions to score")
    scores = choice_loglikelihoods(model, tokenizer, questions, batch_size)
    correct = [_argmax(s) == q.answer for s, q in zip(scores, questions, strict=True)]
    # lm-eval's acc_norm divides by the choice's length in characters (not bytes, not tokens).
    correct_norm = [
        _argmax([value / len(choice) for value, choice in zip(s, q.choices, strict=True)]) == q.answer
        for s, q in zip(scores, questions, strict=True)
    ]
    return {
        "acc": 100.0 * sum(correct) / len(questions),
        "acc_norm": 100.0 * sum(correct_norm) / len(questions),
        "n": len(questions),
        "correct": correct,
        "correct_norm": correct_norm,
    }


def _argmax(values: list[float]) -> int:
    """Index of the largest value; the first one on ties, like numpy.argmax."""
    return max(range(len(values)), key=values.__getitem__)


def _max_length(model) -> int:
    return getattr(model.config, "max_position_embeddings", None) or DEFAULT_MAX_LENGTH


def _build_requests(tokenizer, questions: list[MCQuestion], max_length: int) -> list[_Request]:
    requests = []
    truncated = 0
    for q_index, question in enumerate(questions):
        for c_index, choice in enumerate(question.choices):
            context_ids, continuation_ids = encode_pair(tokenizer, question.context, CONTINUATION_DELIMITER + choice)
            if not continuation_ids:
                raise ValueError(f"question {q_index}: the choice {choice!r} adds no tokens after the context")
            if len(context_ids) + len(continuation_ids) > max_length + 1:
                truncated += 1
                # Keep the continuation whole and drop the start of the context, as lm-eval does.
                context_ids = context_ids[-(max_length + 1 - len(continuation_ids)) :]
            requests.append(_Request(q_index, c_index, context_ids, continuation_ids))
    if truncated:
        warnings.warn(
            f"{truncated} context(s) are longer than the model's {max_length} tokens; their start was cut off.",
            stacklevel=3,
        )
    return requests


def _score_batch(model, batch: list[_Request], pad_id: int, device) -> list[float]:
    """One forward pass over right-padded context+continuation; the last token is never an input."""
    inputs = [r.context_ids + r.continuation_ids[:-1] for r in batch]
    padded = padded_batch(inputs, pad_id)
    logits = model(input_ids=padded["input_ids"].to(device), attention_mask=padded["attention_mask"].to(device)).logits
    values = []
    for row, request in enumerate(batch):
        # The logits at position i predict token i+1: the continuation starts after the context.
        first = len(request.context_ids) - 1
        rows = logits[row, first : first + len(request.continuation_ids)].float()
        targets = torch.tensor(request.continuation_ids, device=rows.device)
        log_probs = torch.log_softmax(rows, dim=-1).gather(1, targets[:, None])
        values.append(float(log_probs.sum()))
    return values
