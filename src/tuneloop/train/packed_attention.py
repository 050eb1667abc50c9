"""Attention over padding-free packed batches that costs what the sequences cost, not what the row costs.

A padding-free batch is one row holding several sequences back to back (position ids restart at 0
for each; `cu_seq_lens_q` marks the boundaries). transformers' sdpa handles such a row with a
block-diagonal mask, which still computes attention over the whole row: for 8 sequences of ~100
tokens that is 8x the work, and on a CPU it was 40% of a training step. The function registered here
runs causal sdpa on each sequence's slice instead (exactly the same result: no token attends across
a boundary), and falls back to transformers' sdpa for ordinary padded batches (evaluation, generation).
Rows of prompts that share each prompt among its replies (PAIR_SPANS: preference pairs' chosen and rejected,
GRPO's sampled groups) get attention that lets each reply see the prompt and itself only; a row of continuations
(CONTINUATION_SPANS: KTO's KL completions, scored without gradients) lets each see its prompt in the key/value
cache an earlier pass left, and itself.
"""

from __future__ import annotations

ATTENTION_NAME = "tuneloop_packed"
# The keyword a model's forward passes down to its attention for rows of replies sharing their prompt
# (tuneloop.train.packed_preference.pack_pairs, tuneloop.train.packed_groups.pack_groups).
PAIR_SPANS = "tuneloop_pair_spans"
# The keyword for a row of continuations of prompts already in the cache (tuneloop.train.packed_preference
# .pack_continuations): [continuations, 4] = the prompt's start and end in the cache, the continuation's start and
# end in this row.
CONTINUATION_SPANS = "tuneloop_continuation_spans"


def packed_sdpa_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None,
                          **kwargs):
    """query [batch, heads, tokens, dim], key/value [batch, kv_heads, tokens, dim] -> [batch, tokens, heads, dim]."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    continuation_spans = kwargs.get(CONTINUATION_SPANS)
    if continuation_spans is not None and query.shape[0] == 1:
        return _continuation_attention(query, key, value, continuation_spans, dropout if module.training else 0.0,
                                       scaling)
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
    edges = boundaries.tolist()

    def pieces(query, key, value):
        return [
            torch.nn.functional.scaled_dot_product_attention(
                query[:, :, start:end], key[:, :, start:end], value[:, :, start:end],
                is_causal=True, dropout_p=dropout, scale=scaling, enable_gqa=grouped,
            )
            for start, end in zip(edges[:-1], edges[1:], strict=True)
            if end > start
        ]

    return _joined(query, key, value, pieces), None


def _joined(query, key, value, pieces):
    """pieces(query, key, value) -> attention outputs [1, heads, n, dim] in row order, joined as [1, tokens, heads,
    dim] in the inputs' dtype. On a CPU, bf16 inputs are computed in fp32."""
    import torch

    dtype = query.dtype
    if query.device.type != "cpu" or dtype != torch.bfloat16:
        return torch.cat(pieces(query, key, value), dim=2).transpose(1, 2).contiguous()
    # PyTorch's CPU attention (forward + backward) runs about 1.4x faster in fp32 than in bf16 at these sizes (1.8x on
    # an AMX Xeon). Autocast must be off around it, or it would cast the fp32 inputs straight back to bf16.
    with torch.autocast(query.device.type, enabled=False):
        outputs = pieces(query.float(), key.float(), value.float())
    return torch.cat(outputs, dim=2).to(dtype).transpose(1, 2).contiguous()


def _shared_prompt_attention(query, key, value, pair_spans, dropout: float, scaling):
    """Attention over rows of prompts each followed by its replies (one prompt for all of them).

    pair_spans [prompts, 2 + replies]: where each prompt starts, where each of its replies starts, and where the
    last reply ends; a reply that starts where the next one does is empty. Preference pairs are prompt, chosen,
    rejected (tuneloop.train.packed_preference); GRPO's groups are a prompt and its sampled replies
    (tuneloop.train.packed_groups). The prompt and its first reply are one causal sequence; every later reply sees
    the prompt and its own earlier tokens, never another reply, so each reply gets exactly the attention it would
    get after its own copy of the prompt.
    """
    import torch

    grouped = query.shape[1] != key.shape[1]
    spans = pair_spans.tolist()

    def pieces(query, key, value):
        outputs = []
        for span in spans:
            prompt, first = span[0], span[1]
            second = span[2] if len(span) > 2 else span[-1]
            outputs.append(torch.nn.functional.scaled_dot_product_attention(
                query[:, :, prompt:second], key[:, :, prompt:second], value[:, :, prompt:second],
                is_causal=True, dropout_p=dropout, scale=scaling, enable_gqa=grouped))
            for start, end in zip(span[2:-1], span[3:], strict=True):
                if end > start:
                    outputs.append(_after_prompt(query[:, :, start:end], key, value, (prompt, first), (start, end),
                                                 dropout, scaling, grouped))
        return outputs

    return _joined(query, key, value, pieces), None


def _continuation_attention(query, key, value, continuation_spans, dropout: float, scaling):
    """Attention for a row of continuations whose prompts are in the cache: key/value are [cache, this row].

    continuation_spans [continuations, 4]: the prompt's start and end in the cache, the continuation's start and
    end in this row (tuneloop.train.packed_preference.pack_continuations). Each continuation sees its prompt and
    its own earlier tokens, as if it followed that prompt in one sequence.
    """
    grouped = query.shape[1] != key.shape[1]
    cached = key.shape[2] - query.shape[2]
    spans = continuation_spans.tolist()

    def pieces(query, key, value):
        return [_after_prompt(query[:, :, start:end], key, value, (prompt_start, prompt_end),
                              (cached + start, cached + end), dropout, scaling, grouped)
                for prompt_start, prompt_end, start, end in spans if end > start]

    return _joined(query, key, value, pieces), None


def _after_prompt(query, key, value, prompt: tuple[int, int], reply: tuple[int, int], dropout: float, scaling,
                  grouped: bool):
    """sdpa for one reply's queries over its prompt's keys and its own (key positions [start, end) of each)."""
    import torch

    keys = torch.cat([key[:, :, prompt[0]:prompt[1]], key[:, :, reply[0]:reply[1]]], dim=2)
    values = torch.cat([value[:, :, prompt[0]:prompt[1]], value[:, :, reply[0]:reply[1]]], dim=2)
    # Causal aligned to the bottom right: reply token i sees the whole prompt and reply tokens 0..i.
    visible = torch.ones(query.shape[2], keys.shape[2], dtype=torch.bool, device=query.device)
    mask = torch.zeros(visible.shape, dtype=query.dtype, device=query.device).masked_fill_(
        ~visible.tril_(prompt[1] - prompt[0]), float("-inf"))
    return torch.nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=mask, dropout_p=dropout,
                                                            scale=scaling, enable_gqa=grouped)


def register_packed_attention() -> str:
    """Make `attn_implementation="tuneloop_packed"` available to transformers models; returns the name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION_NAME, packed_sdpa_attention)
    # Padded batches still need sdpa's mask; packed ones ignore it.
    AttentionMaskInterface.register(ATTENTION_NAME, sdpa_mask)
    return ATTENTION_NAME
