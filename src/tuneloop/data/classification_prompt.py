"""The generative classifier's prompt: the chat example that asks for one of the label names, and its saved labels.

The recipe (tuneloop.recipes.classify_generative) trains on these examples and saves LABELS_FILE beside the
weights; the evaluate stage and export read them back.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuneloop.errors import ConfigError, TuneloopError

LABELS_FILE = "classifier_labels.json"
PROMPT = "Classify the text. Answer with exactly one of these labels: {labels}.\n\nText: {text}"
MIN_TEXT_TOKENS = 8


def classification_messages(text: str, labels: list[str], label: str) -> list[dict]:
    """The chat example for one row: the question with the label names and the text, answered by `label`."""
    return [
        {"role": "user", "content": PROMPT.format(labels=", ".join(labels), text=text)},
        {"role": "assistant", "content": label},
    ]


def fit_texts(tokenizer, texts: list[str], labels: list[str], max_length: int) -> tuple[list[str], int]:
    """The texts cut (by tokens) so prompt + text + the longest label fit in max_length, and how many were cut.

    Cutting the whole rendered example instead would cut the label, the one thing the model must see.
    """
    longest = max(labels, key=lambda name: len(tokenizer(name, add_special_tokens=False)["input_ids"]))
    frame = tokenizer.apply_chat_template(classification_messages("", labels, longest), tokenize=False)
    frame_tokens = len(tokenizer(frame, add_special_tokens=False)["input_ids"])
    room = max_length - frame_tokens - 2  # a token or two can merge differently at the text's edges
    if room < MIN_TEXT_TOKENS:
        raise ConfigError(
            f"data.max_length={max_length}: the prompt with the {len(labels)} label names and the longest label "
            f"already take {frame_tokens} tokens, leaving no room for the text. Raise data.max_length to at "
            f"least {frame_tokens + 64}, or use train.classifier: head (no label names in the input)."
        )
    fitted, cut = [], 0
    for text, ids in zip(texts, tokenizer(texts, add_special_tokens=False)["input_ids"], strict=True):
        if len(ids) > room:
            text, cut = tokenizer.decode(ids[:room]), cut + 1
        fitted.append(text)
    return fitted, cut


def read_labels(weights: Path) -> list[str]:
    """The label names a generative classifier was trained on, saved beside its weights."""
    path = weights / LABELS_FILE
    if not path.is_file():
        raise TuneloopError(f"{weights}: no {LABELS_FILE}; this is not a generative classifier's output.")
    return json.loads(path.read_text(encoding="utf-8"))["labels"]
