"""Render examples through the chat template and tokenize them, with labels only on what the model must learn.

A chat example is rendered once as a whole; the character spans of each assistant reply (including
the template's end-of-turn marker, so the model learns to stop) are found by rendering the prefix
before and after that reply. Tokens outside those spans get label -100 unless train_on_prompt.
Every assistant turn of a multi-turn example is trained, except one marked "weight": 0 (OpenAI's
per-turn weight), whose tokens get -100 like the prompt's. Conversations with tools are rendered
through tuneloop.data.tool_rendering (natively, or written as text for templates without tool support).
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneloop.data.tool_rendering import conversation_for_template, has_tools, template_supports_tools
from tuneloop.errors import DataError

IGNORE_INDEX = -100


@dataclass
class EncodeStats:
    examples: int = 0
    truncated: int = 0
    dropped_no_target: int = 0  # truncation removed every trainable token
    tokens: int = 0
    target_tokens: int = 0
    tools_as_text: int = 0  # examples whose tool calls were written as text (the template has no tool support)


def render_prompt(tokenizer, messages: list[dict], tools: list[dict] | None = None) -> str:
    """The text a model sees before it writes the final assistant reply."""
    if tools is not None or any(m.get("tool_calls") or m["role"] == "tool" for m in messages):
        messages, tools = conversation_for_template(tokenizer, {"messages": messages, "tools": tools})
    return _render(tokenizer, messages[:-1], tools, add_generation_prompt=True)


def _render(tokenizer, messages: list[dict], tools: list[dict] | None, add_generation_prompt: bool = False) -> str:
    extra = {"tools": tools} if tools else {}
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt,
                                         **extra)


def assistant_spans(tokenizer, messages: list[dict], tools: list[dict] | None = None
                    ) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the [start, end) character span of each assistant reply."""
    full = _render(tokenizer, messages, tools)
    spans = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, messages[:index], tools, add_generation_prompt=True)
        through = _render(tokenizer, messages[: index + 1], tools)
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
        messages, tools = conversation_for_template(tokenizer, example)
        if has_tools(example) and not template_supports_tools(tokenizer):
            stats.tools_as_text += 1
        text, spans = assistant_spans(tokenizer, messages, tools)
        weights = [m.get("weight", 1) for m in messages if m["role"] == "assistant"]
        trained = [span for span, weight in zip(spans, weights, strict=True) if weight != 0]
        excluded = [span for span, weight in zip(spans, weights, strict=True) if weight == 0]
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        ids = encoded["input_ids"]
        labels = [
            # train_on_prompt trains everything but the replies weighted 0 (the user excluded those)
            token if (train_on_prompt or any(start <= begin < end for start, end in trained))
            and not any(start <= begin < end for start, end in excluded) else IGNORE_INDEX
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
