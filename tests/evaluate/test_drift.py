"""The drift measure: per-token KL(tuned || base) per document, and its bootstrap interval over documents."""

from __future__ import annotations

import numpy as np
import torch

from tuneloop.evaluate.drift import ratio_interval
from tuneloop.models.load import load_causal_lm, load_tokenizer
from tuneloop.train.guard.drift import document_kl, drift_documents


def test_drift_interval_resamples_documents():
    sums, counts = np.array([1.0, 2.0, 30.0, 4.0]), np.array([10.0, 10.0, 10.0, 10.0])
    low, high = ratio_interval(sums, counts)
    assert low < sums.sum() / counts.sum() < high


def test_document_kl_is_zero_against_itself(tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir))
    documents = [[5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16, 17, 18, 19]]
    sums, counts = document_kl(model, lambda ids, mask: model(input_ids=ids, attention_mask=mask).logits,
                               documents, pad_token_id=0)
    assert list(counts) == [4, 2, 6] and np.allclose(sums, 0.0, atol=1e-5)


def test_document_kl_grows_when_the_model_moves(tiny_model_dir):
    model, moved = load_causal_lm(str(tiny_model_dir)), load_causal_lm(str(tiny_model_dir))
    with torch.no_grad():
        moved.model.layers[1].mlp.down_proj.weight.mul_(4.0)
    documents = [[5, 6, 7, 8, 9], [10, 11, 12]]
    sums, counts = document_kl(moved, lambda ids, mask: model(input_ids=ids, attention_mask=mask).logits,
                               documents, pad_token_id=0)
    assert (sums > 0).all() and list(counts) == [4, 2]


def test_drift_documents_reads_rows_and_caps_them(tiny_model_dir, tmp_path):
    path = tmp_path / "general.txt"
    path.write_text("\n\n".join(f"Paragraph number {i} about the weather." for i in range(9)) + "\n",
                    encoding="utf-8")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    documents = drift_documents([str(path)], tokenizer, max_length=5, max_documents=4)
    assert len(documents) == 4 and all(2 <= len(ids) <= 5 for ids in documents)
