"""Turn canonical chat examples into (source, target) texts for encoder-decoder models, and tokenize them.

The encoder reads the prompt side of the conversation; the decoder learns the final assistant reply.
A lone user turn is the source as it is (a summarization row's source is its instruction and
document); several turns are joined as "role: content" lines so the speakers stay apart.
Sources and targets longer than data.max_length are truncated, each side counted on its own.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneloop.errors import DataError


@dataclass
class PairStats:
    examples: int = 0
    truncated_sources: int = 0
    truncated_targets: int = 0
    source_tokens: int = 0
    target_tokens: int = 0


def source_text(messages: list[dict]) -> str:
    """What the encoder reads: every turn before the final reply."""
    prompt = messages[:-1]
    if len(prompt) == 1:
        return prompt[0]["content"]
    return "\n".join(f"{message['role']}: {message['content']}" for message in prompt)


def source_and_target(example: dict) -> tuple[str, str]:
    if "messages" not in example:
        raise DataError(
            "an encoder-decoder model learns to map a source to a target, but this example is plain text with no "
            "reply to learn. Use chat, alpaca, prompt_completion or summarization data, or a causal (decoder-only) "
            "model for plain text."
        )
    return source_text(example["messages"]), example["messages"][-1]["content"]


def encode_pairs(tokenizer, examples: list[dict], max_length: int) -> tuple[list[dict], PairStats]:
    """input_ids (the source) and labels (the target, ending in EOS so the model learns to stop) per example."""
    stats = PairStats()
    encoded = []
    for example in examples:
        source, target = source_and_target(example)
        source_ids = _tokens(tokenizer, source, max_length)
        target_ids = _tokens(tokenizer, target, max_length)
        stats.examples += 1
        stats.truncated_sources += source_ids.truncated
        stats.truncated_targets += target_ids.truncated
        stats.source_tokens += len(source_ids.ids)
        stats.target_tokens += len(target_ids.ids)
        encoded.append({"input_ids": source_ids.ids, "labels": target_ids.ids})
    return encoded, stats


@dataclass
class _Tokens:
    ids: list[int]
    truncated: bool


def _tokens(tokenizer, text: str, max_length: int) -> _Tokens:
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    eos = tokenizer.eos_token_id
    if eos is not None and (not ids or ids[-1] != eos):
        ids = ids + [eos]  # a tokenizer without a post-processor would leave the end unmarked
    if len(ids) <= max_length:
        return _Tokens(ids, False)
    # Keep the closing EOS, as the tokenizer's own truncation does: the text is cut, its end still marked.
    cut = ids[: max_length - 1] + [eos] if eos is not None else ids[:max_length]
    return _Tokens(cut, True)
