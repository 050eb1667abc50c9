"""Concatenate-and-chunk packing for continued pretraining: documents -> one token stream -> full blocks.

Each document is tokenized (with the tokenizer's BOS where it adds one), followed by EOS, and the
documents are joined into one stream cut into blocks of `block_size` tokens, as in GPT-style
pretraining: no padding, no truncation, and a block may hold the end of one document and the start
of the next (attention crosses the EOS, as in standard pretraining). Every token lands in exactly
one block: only the last block may be shorter, and `PackStats` counts it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass

from tuneloop.errors import DataError

TOKENIZE_BATCH = 1000  # documents per tokenizer call: fast tokenizers parallelize within a batch


@dataclass(frozen=True)
class PackStats:
    documents: int
    tokens: int  # document tokens plus one EOS per document
    blocks: int
    block_size: int
    last_block_tokens: int  # block_size when the stream divides evenly, else the shorter final block

    def as_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        full = self.blocks - (self.last_block_tokens < self.block_size)
        tail = f" + 1 of {self.last_block_tokens}" if self.last_block_tokens < self.block_size else ""
        return (f"{self.documents} document(s), {self.tokens:,} tokens -> {full} block(s) of {self.block_size}{tail}"
                " (no padding, nothing truncated)")


def document_token_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    """Token ids of each document followed by EOS (BOS first where the tokenizer adds one)."""
    eos = tokenizer.eos_token_id
    if eos is None:
        raise DataError("the tokenizer has no end-of-sequence token, so documents cannot be separated when "
                        "packed; choose a model whose tokenizer defines eos_token.")
    documents = []
    for start in range(0, len(texts), TOKENIZE_BATCH):
        encoded = tokenizer(texts[start:start + TOKENIZE_BATCH], add_special_tokens=True)["input_ids"]
        documents.extend(ids if ids and ids[-1] == eos else ids + [eos] for ids in encoded)
    return documents


def pack_documents(documents: Iterable[list[int]], block_size: int) -> tuple[list[list[int]], PackStats]:
    """The token stream of all documents cut into blocks of block_size (the last one may be shorter)."""
    stream: list[int] = []
    count = 0
    for ids in documents:
        stream.extend(ids)
        count += 1
    blocks = [stream[start:start + block_size] for start in range(0, len(stream), block_size)]
    last = len(blocks[-1]) if blocks else 0
    return blocks, PackStats(count, len(stream), len(blocks), block_size, last)


def pack_texts(tokenizer, texts: list[str], block_size: int) -> tuple[list[list[int]], PackStats]:
    return pack_documents(document_token_ids(tokenizer, texts), block_size)


def first_tokens(blocks: list[list[int]], max_tokens: int | None) -> list[list[int]]:
    """The leading blocks holding at most max_tokens tokens (at least one block); all when max_tokens is None."""
    if max_tokens is None:
        return blocks
    kept, total = [], 0
    for block in blocks:
        if kept and total + len(block) > max_tokens:
            break
        kept.append(block)
        total += len(block)
    return kept


class BlockCollator:
    """Stack blocks into a batch; labels are the inputs (the model shifts them). Only a short final block
    is padded, and its padding is masked out of attention and loss (pad may equal EOS, which is learned)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict]) -> dict:
        from tuneloop.data.batching import padded_batch

        rows = [feature["input_ids"] for feature in features]
        return padded_batch(rows, self.pad_token_id, labels=rows)
