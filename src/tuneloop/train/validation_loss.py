"""Validation loss and perplexity: mean cross-entropy per target token over held-out examples or packed blocks."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from tuneloop.data.batching import padded_batch
from tuneloop.data.encode import IGNORE_INDEX


@torch.inference_mode()
def validation_loss(model, encoded: list[dict], pad_token_id: int, batch_size: int = 8) -> dict[str, float]:
    """Token-weighted mean loss (so long and short examples count per token, as in training) and its exp.

    Causal rows hold input_ids and labels of one length; encoder-decoder rows (`tuneloop.data.pairs`)
    hold the source as input_ids and the target as labels.
    """
    if getattr(model.config, "is_encoder_decoder", False):
        return _seq2seq_loss(model, encoded, pad_token_id, batch_size)
    device = next(model.parameters()).device
    total_loss, total_tokens = 0.0, 0
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    for start in range(0, len(order), batch_size):
        batch = [encoded[i] for i in order[start : start + batch_size]]
        width = max(len(item["input_ids"]) for item in batch)
        padded = padded_batch([item["input_ids"] for item in batch], pad_token_id, [item["labels"] for item in batch])
        labels = padded["labels"]
        logits = model(input_ids=padded["input_ids"].to(device),
                       attention_mask=padded["attention_mask"].to(device)).logits.float()
        logits = logits[:, -width:]  # prompt tuning (train.method: prompt) returns its virtual tokens' logits first
        shifted_logits, shifted_labels = logits[:, :-1], labels[:, 1:].to(device)
        loss = F.cross_entropy(
            shifted_logits.reshape(-1, shifted_logits.size(-1)),
            shifted_labels.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        total_loss += loss.item()
        total_tokens += int((shifted_labels != IGNORE_INDEX).sum())
    mean = total_loss / max(total_tokens, 1)
    return {"validation_loss": mean, "perplexity": math.exp(min(mean, 50.0)), "validation_tokens": total_tokens}


def _seq2seq_loss(model, encoded: list[dict], pad_token_id: int, batch_size: int) -> dict[str, float]:
    device = next(model.parameters()).device
    total_loss, total_tokens = 0.0, 0
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
    for start in range(0, len(order), batch_size):
        batch = [encoded[i] for i in order[start : start + batch_size]]
        padded = padded_batch([item["input_ids"] for item in batch], pad_token_id, [item["labels"] for item in batch])
        labels = padded["labels"]
        # The model shifts the labels right into decoder inputs itself, so logits line up with labels.
        logits = model(input_ids=padded["input_ids"].to(device), attention_mask=padded["attention_mask"].to(device),
                       labels=labels.to(device)).logits.float()
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.to(device).reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")
        total_loss += loss.item()
        total_tokens += int((labels != IGNORE_INDEX).sum())
    mean = total_loss / max(total_tokens, 1)
    return {"validation_loss": mean, "perplexity": math.exp(min(mean, 50.0)), "validation_tokens": total_tokens}


# Packed blocks (continued pretraining, general text): logits of batch x block x vocabulary floats are the
# memory peak; keep a forward pass near this many tokens.
TOKENS_PER_FORWARD = 4096


def block_losses(model, blocks: list[list[int]], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Summed next-token cross-entropy and the number of predicted tokens of each block."""
    device = next(model.parameters()).device
    per_forward = max(1, min(batch_size, TOKENS_PER_FORWARD // max(len(block) for block in blocks)))
    sums, counts = np.zeros(len(blocks)), np.zeros(len(blocks))
    start = 0
    with torch.inference_mode():
        while start < len(blocks):
            # A batch holds blocks of one length: all are full but the last, so no padding is needed.
            end = start + 1
            while end < len(blocks) and end - start < per_forward and len(blocks[end]) == len(blocks[start]):
                end += 1
            ids = torch.tensor(blocks[start:end], dtype=torch.long, device=device)
            logits = model(input_ids=ids).logits.float()
            losses = F.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1),
                                     reduction="none").view(end - start, -1)
            sums[start:end] = losses.sum(dim=1).cpu().numpy()
            counts[start:end] = losses.size(1)
            start = end
    return sums, counts


def perplexity_scores(sums: np.ndarray, counts: np.ndarray, name: str) -> dict[str, float]:
    loss = float(sums.sum() / max(counts.sum(), 1))
    return {f"{name}_perplexity": math.exp(min(loss, 50.0)), f"{name}_loss": loss}
