"""KL from the base on general documents: the measure behind evaluate.drift_texts and interpolate: auto.

Each document is cut at max_length tokens; document_kl sums KL(model || reference) over every predicted
token of each document, batching documents of similar length (tuneloop.evaluate.drift reports it).
"""

from __future__ import annotations

import numpy as np

from tuneloop.data.batching import padded_batch
from tuneloop.data.prepare import load_examples
from tuneloop.data.text_fields import example_text
from tuneloop.train.guard.kl import token_kl

TOKENS_PER_FORWARD = 2048


def drift_documents(paths: list[str], tokenizer, max_length: int, max_documents: int) -> list[list[int]]:
    """Token ids of the first max_documents documents (each at most max_length tokens, at least 2)."""
    documents: list[list[int]] = []
    for path in paths:
        for example in load_examples(path, "auto", skip_invalid=True).examples:
            ids = tokenizer(example_text(example), add_special_tokens=True)["input_ids"][:max_length]
            if len(ids) >= 2:
                documents.append(ids)
            if len(documents) >= max_documents:
                return documents
    return documents


def document_kl(model, reference, documents: list[list[int]], pad_token_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Summed KL(model || reference) over each document's predicted tokens, and their counts.

    reference(input_ids, attention_mask) returns the base logits (an adapter switched off, or another model).
    """
    import torch

    device = next(model.parameters()).device
    sums, counts = np.zeros(len(documents)), np.zeros(len(documents))
    order = sorted(range(len(documents)), key=lambda i: len(documents[i]))
    start = 0
    with torch.inference_mode():
        while start < len(order):
            end = start + 1
            while end < len(order) and (end - start + 1) * len(documents[order[end]]) <= TOKENS_PER_FORWARD:
                end += 1
            batch = order[start:end]
            padded = padded_batch([documents[i] for i in batch], pad_token_id)
            ids, mask = padded["input_ids"].to(device), padded["attention_mask"].to(device)
            tuned = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            base = reference(ids, mask)[:, :-1]
            kl = token_kl(tuned.reshape(-1, tuned.size(-1)), base.reshape(-1, base.size(-1))).view(len(batch), -1)
            predicted = mask[:, 1:].float()
            sums[batch] = (kl * predicted).sum(dim=1).cpu().numpy()
            counts[batch] = predicted.sum(dim=1).cpu().numpy()
            start = end
    return sums, counts
