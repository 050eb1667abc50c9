"""Render examples through the chat template and tokenize them, with labels only on what the model must learn.

A chat example is rendered once as a whole; the character spans of each assistant reply (including
the template's end-of-turn marker, so the model learns to stop) are found by rendering the prefix
before and after that reply. Tokens outside those spans get label -100 unless train_on_prompt.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneloop.errors import DataError

IGNORE_INDEX = -100


@dataclass
class EncodeStats:
    examples: int = 0
    truncated: int = 0
    dropped_no_target: int = 0  # truncation removed every trainable token
    tokens: int = 0
    target_tokens: int = 0


def render_prompt(tokenizer, messages: list[dict]) -> str:
    """The text a model sees before it writes the final assistant reply."""
    return tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)


def assistant_spans(tokenizer, messages: list[dict]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character span of each assistant reply."""
    full = tokenizer.apply_chat_template(messages, tokenize=False)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = tokenizer.apply_chat_template(messages[:index], tokenize=False, add_generation_prompt=True)
        through = tokenizer.apply_chat_template(messages[: index + 1], tokenize=False)
        if not (through.startswith(before) and full.startswith(through)):
            raise DataError(
                "the chat template renders a conversation differently from its prefixes, so the assistant "
                "replies cannot be located. Set data.train_on_prompt: true, or choose another data.chat_template."
            )
        spans.append((len(before), len(through)))
    return full, spans


def encode_example(tokenizer, example: dict, max_length: int, train_on_prompt: bool, stats: EncodeStats) -> dict | None:
    """input_ids and labels for one canonical example; None when truncation leaves nothing to learn."""
    stats.examples += 1
    if "text" in example:
        ids = tokenizer(example["text"], add_special_tokens=True)["input_ids"]
        if tokenizer.eos_token_id is not None:
            ids = ids + [tokenizer.eos_token_id]
        labels = list(ids)
    else:
        text, spans = assistant_spans(tokenizer, example["messages"])
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = encoded["input_ids"]
        if train_on_prompt:
            labels = list(ids)
        else:
            labels = [
                token if any(start <= begin < end for start, end in spans) else IGNORE_INDEX
                for token, (begin, _) in zip(ids, encoded["offset_mapping"], strict=True)
            ]
    if len(ids) > max_length:
        stats.truncated += 1
        ids, labels = ids[:max_length], labels[:max_length]
    if all(label == IGNORE_INDEX for label in labels):
        stats.dropped_no_target += 1
        return None
    stats.tokens += len(ids)
    stats.target_tokens += sum(label != IGNORE_INDEX for label in labels)
    return {"input_ids": ids, "labels": labels}


def encode_examples(
    tokenizer, examples: list[dict], max_length: int, train_on_prompt: bool
) -> tuple[list[dict], EncodeStats]:
    stats = EncodeStats()
    encoded = [encode_example(tokenizer, ex, max_length, train_on_prompt, stats) for ex in examples]
    return [item for item in encoded if item is not None], stats
