"""Validation loss and perplexity: mean cross-entropy per target token over held-out examples."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

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
        input_ids = torch.full((len(batch), width), pad_token_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, item in enumerate(batch):
            length = len(item["input_ids"])
            input_ids[row, :length] = torch.tensor(item["input_ids"])
            labels[row, :length] = torch.tensor(item["labels"])
            attention[row, :length] = 1
        logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device)).logits.float()
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
        sources = right_padded([item["input_ids"] for item in batch], pad_token_id)
        attention = right_padded([[1] * len(item["input_ids"]) for item in batch], 0)
        labels = right_padded([item["labels"] for item in batch], IGNORE_INDEX)
        # The model shifts the labels right into decoder inputs itself, so logits line up with labels.
        logits = model(
            input_ids=sources.to(device), attention_mask=attention.to(device), labels=labels.to(device)
        ).logits.float()
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), labels.to(device).reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")
        total_loss += loss.item()
        total_tokens += int((labels != IGNORE_INDEX).sum())
    mean = total_loss / max(total_tokens, 1)
    return {"validation_loss": mean, "perplexity": math.exp(min(mean, 50.0)), "validation_tokens": total_tokens}


def right_padded(rows: list[list[int]], fill: int) -> torch.Tensor:
    """The rows as one (len(rows), longest) long tensor, each row padded on the right with fill."""
    tensor = torch.full((len(rows), max(len(row) for row in rows)), fill, dtype=torch.long)
    for index, row in enumerate(rows):
        tensor[index, : len(row)] = torch.tensor(row)
    return tensor
