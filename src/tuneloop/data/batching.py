"""Right-padded batches of token-id rows: the one place that turns ragged rows into (rows, longest) tensors.

Every batched forward pass over rows of unequal length (validation loss, preference log-probs, reward
scores, multiple-choice log-likelihoods, drift KL, the time estimate, packed text blocks) pads on the
right with these, so a change to padding is made once. Generation pads on the left instead, so that every
prompt ends where the reply starts (tuneloop.models.generate, tuneloop.serve.decode).
"""

from __future__ import annotations

import torch

from tuneloop.data.encode import IGNORE_INDEX


def right_padded(rows: list, fill: int) -> torch.Tensor:
    """The rows as one (len(rows), longest) long tensor, each row padded on the right with fill."""
    tensor = torch.full((len(rows), max(len(row) for row in rows)), fill, dtype=torch.long)
    for index, row in enumerate(rows):
        tensor[index, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return tensor


def padded_batch(input_ids: list, pad_id: int, labels: list | None = None, label_fill: int = IGNORE_INDEX) -> dict:
    """{"input_ids", "attention_mask"} (and "labels" when given, padded with label_fill) for ragged rows."""
    batch = {"input_ids": right_padded(input_ids, pad_id),
             "attention_mask": right_padded([[1] * len(row) for row in input_ids], 0)}
    if labels is not None:
        batch["labels"] = right_padded(labels, label_fill)
    return batch
