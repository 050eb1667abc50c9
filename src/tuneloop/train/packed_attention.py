"""Attention over padding-free packed batches that costs what the sequences cost, not what the row costs.

A padding-free batch is one row holding several sequences back to back (position ids restart at 0
for each; `cu_seq_lens_q` marks the boundaries). transformers' sdpa handles such a row with a
block-diagonal mask, which still computes attention over the whole row: for 8 sequences of ~100
tokens that is 8x the work, and on a CPU it was 40% of a training step. The function registered here
runs causal sdpa on each sequence's slice instead (exactly the same result: no token attends across
a boundary), and falls back to transformers' sdpa for ordinary padded batches (evaluation, generation).
Rows of preference pairs that share each prompt between chosen and rejected (PAIR_SPANS) get attention that
lets each reply see the prompt and itself only.
"""

from __future__ import annotations

import contextlib

ATTENTION_NAME = "tuneloop_packed"
# The keyword a model's forward passes down to its attention for rows of preference pairs sharing their prompt
# (tuneloop.train.packed_preference.pack_pairs).
PAIR_SPANS = "tuneloop_pair_spans"


def packed_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                          **kwargs):
    """query [batch, heads, tokens, dim], key/value [batch, kv_heads, tokens, dim] -> [batch, tokens, heads, dim]."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    pair_spans = kwargs.get(PAIR_SPANS)
    if pair_spans is not None and query.shape[0] == 1 and query.shape[2] == key.shape[2]:
        return _shared_prompt_attention(query, key, value, pair_spans, dropout if module.training else 0.0, scaling)
    boundaries = kwargs.get("cu_seq_lens_q")
    if boundaries is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, is_causal=is_causal, **kwargs
        )
    grouped = query.shape[1] != key.shape[1]  # grouped-query attention: fewer key/value heads than query heads
    dropout = dropout if module.training else 0.0
    dtype = query.dtype
    upcast = query.device.type == "cpu" and dtype == torch.bfloat16
    if upcast:
        # PyTorch's CPU attention (forward + backward) runs about 1.4x faster in fp32 than in bf16 at these sizes.
        # Autocast must be off around it, or it would cast the fp32 inputs straight back to bf16.
        query, key, value = query.float(), key.float(), value.float()
    edges = boundaries.tolist()
    with torch.autocast(query.device.type, enabled=False) if upcast else contextlib.nullcontext():
        pieces = [
            torch.nn.functional.scaled_dot_product_attention(
                query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
                is_causal=True, dropout_p=dropout, scale=scaling, enable_gqa=grouped,
            )
            for start, end in zip(edges[:-1], edges[1:], strict=True)
            if end > start
        ]
    return torch.cat(pieces, dim=2).to(dtype).transpose(1, 2).contiguous(), None


def _shared_prompt_attention(query, key, value, pair_spans, dropout: float, scaling):
    """Attention over rows of preference pairs laid out prompt, chosen, rejected (one prompt for both replies).

    pair_spans [pairs, 4]: where each pair's prompt, chosen and rejected start, and where the pair ends. Prompt and
    chosen are one causal sequence; the rejected tokens see the prompt and the rejected tokens before them, never
    the chosen reply, so each reply gets exactly the attention it would get after its own copy of the prompt.
    """
    import torch

    grouped = query.shape[1] != key.shape[1]
    dtype = query.dtype
    upcast = query.device.type == "cpu" and dtype == torch.bfloat16
    if upcast:  # as in packed_sdpa_attention
        query, key, value = query.float(), key.float(), value.float()
    pieces = []
    with torch.autocast(query.device.type, enabled=False) if upcast else contextlib.nullcontext():
        for prompt, chosen, rejected, end in pair_spans.tolist():
            pieces.append(torch.nn.functional.scaled_dot_product_attention(
                query[:, :, prompt:rejected], key[:, :, prompt:rejected], value[:, :, prompt:rejected],
                is_causal=True, dropout_p=dropout, scale=scaling, enable_gqa=grouped))
            if end == rejected:
                continue
            keys = torch.cat([key[:, :, prompt:chosen], key[:, :, rejected:end]], dim=2)
            values = torch.cat([value[:, :, prompt:chosen], value[:, :, rejected:end]], dim=2)
            # Causal aligned to the bottom right: rejected token i sees the whole prompt and rejected tokens 0..i.
            visible = torch.ones(end - rejected, keys.shape[2], dtype=torch.bool, device=query.device)
            mask = torch.zeros(visible.shape, dtype=query.dtype, device=query.device).masked_fill_(
                ~visible.tril_(chosen - prompt), float("-inf"))
            pieces.append(torch.nn.functional.scaled_dot_product_attention(
                query[:, :, rejected:end], keys, values, attn_mask=mask, dropout_p=dropout, scale=scaling,
                enable_gqa=grouped))
    return torch.cat(pieces, dim=2).to(dtype).transpose(1, 2).contiguous(), None


def register_packed_attention() -> str:
    """Make `attn_implementation="tuneloop_packed"` available to transformers models; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, packed_sdpa_attention)
    # Padded batches still need sdpa's mask; packed ones ignore it.
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    return ATTENTION_NAME
