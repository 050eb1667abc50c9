"""GRPO's sampled groups on the fast path: each prompt's KV cache computed once for its group, and one packed row.

TRL's GRPOTrainer repeats each prompt train.grpo.num_generations times. Sampling prefills every copy, and the
policy and reference passes run the padded [replies, prompt + completion] batch through the whole model, with
the LM head on every position (on a CPU its fused head scores prompts too). Here:
- `shared_prompt_generate` prefills each distinct prompt once, copies its KV cache to the rows that sample from
  it and lets `generate` continue from there: the replies are the ones sampling from each copy would give.
- `pack_groups` lays a batch of sampled replies out as one padding-free row: each distinct prompt once, then
  each of its replies. The packed attention (tuneloop.train.packed_attention, PAIR_SPANS) lets each reply see
  its prompt and itself only, and each reply's position ids continue from its prompt, so every reply token's
  log-prob is the one it has after its own copy of the prompt.
- `group_token_log_probs` gives TRL's per-token log-probs [replies, completion length] (and entropies) from
  that row; the LM head runs on the positions that predict a reply token only
  (tuneloop.train.packed_preference.install_reply_log_probs).
"""

from __future__ import annotations

from tuneloop.train.packed_attention import PAIR_SPANS


def distinct_prompts(prompt_ids: list[list[int]]) -> tuple[list[tuple[int, ...]], list[int]]:
    """(each distinct prompt in first-seen order, the index of every row's prompt among them)."""
    index: dict[tuple[int, ...], int] = {}
    rows = [index.setdefault(tuple(prompt), len(index)) for prompt in prompt_ids]
    return list(index), rows


def shared_prompt_generate(model, prompt_ids: list[list[int]], pad_token_id: int, **generate_kwargs):
    """model.generate on the left-padded prompts, each distinct prompt's KV cache computed once.

    Returns generate's [rows, prompt length + new tokens], as generate on the padded rows would. All but each
    prompt's last token are prefilled here, once per distinct prompt; the cache is copied to every row that
    samples from it, and generate runs the last prompt token itself (it needs one uncached token to start).
    """
    import torch
    from transformers import DynamicCache

    device = model.device
    distinct, row_prompt = distinct_prompts(prompt_ids)
    width = max(len(prompt) for prompt in distinct)
    padded = torch.tensor([[pad_token_id] * (width - len(p)) + list(p) for p in distinct], device=device)
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in distinct], device=device)
    # The position ids generate derives from a left-padded mask.
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 0)
    cache = DynamicCache(config=model.config)
    if width > 1:
        with torch.no_grad():
            model(input_ids=padded[:, :-1], attention_mask=mask[:, :-1], position_ids=positions[:, :-1],
                  cache=cache, use_cache=True)
    rows = torch.tensor(row_prompt, device=device)
    if width > 1:
        cache.reorder_cache(rows)  # index_select along the batch: each row gets its prompt's copy
    return model.generate(input_ids=padded[rows], attention_mask=mask[rows], cache=cache if width > 1 else None,
                          **generate_kwargs)


def pack_groups(input_ids, attention_mask, completion_length: int):
    """One padding-free row from TRL's padded [rows, prompt + completion] batch, or None when it is not packable.

    input_ids/attention_mask: left-padded prompts followed by right-padded completions (completion_length
    columns). Rows with the same prompt share one copy of it: the row holds each distinct prompt, then its
    replies. Returns (batch for the reply log-prob forward, each reply token's row, each one's column in the
    completion). None when a completion has a masked token before its last real one or a prompt is empty (the
    padded path handles those).
    """
    import torch

    prompt_length = input_ids.shape[1] - completion_length
    ids = input_ids.detach().cpu()
    mask = attention_mask.detach().cpu().bool()
    prompts, replies = [], []
    for row in range(ids.shape[0]):
        prompt = ids[row, :prompt_length][mask[row, :prompt_length]].tolist()
        reply_mask = mask[row, prompt_length:]
        length = int(reply_mask.sum())
        if not prompt or not bool(reply_mask[:length].all()):
            return None
        prompts.append(prompt)
        replies.append(ids[row, prompt_length:prompt_length + length].tolist())
    distinct, row_prompt = distinct_prompts(prompts)
    groups: list[list[int]] = [[] for _ in distinct]
    for row, prompt in enumerate(row_prompt):
        groups[prompt].append(row)

    width = 2 + max(len(rows) for rows in groups)
    tokens, positions, spans, predictors, targets, token_rows, token_columns = [], [], [], [], [], [], []
    for prompt, rows in zip(distinct, groups, strict=True):
        start = len(tokens)
        tokens += prompt
        positions += range(len(prompt))
        span = [start]
        for row in rows:
            reply = replies[row]
            span.append(len(tokens))
            # Reply token j is predicted at the token before it: the prompt's last token for j = 0.
            predictors += [start + len(prompt) - 1] + list(range(len(tokens), len(tokens) + len(reply) - 1))
            targets += reply
            token_rows += [row] * len(reply)
            token_columns += range(len(reply))
            tokens += reply
            positions += range(len(prompt), len(prompt) + len(reply))
        span += [len(tokens)] * (width - len(span))  # fewer replies than the largest group: empty ones
        spans.append(span)
    device = input_ids.device
    batch = {
        "input_ids": torch.tensor([tokens], device=device),
        "position_ids": torch.tensor([positions], device=device),
        PAIR_SPANS: torch.tensor(spans, dtype=torch.int64, device=device),
        "reply_predictors": torch.tensor(predictors, dtype=torch.int64, device=device),
        "reply_targets": torch.tensor(targets, dtype=torch.int64, device=device),
    }
    return (batch, torch.tensor(token_rows, dtype=torch.int64, device=device),
            torch.tensor(token_columns, dtype=torch.int64, device=device))


def group_token_log_probs(model, input_ids, attention_mask, completion_length: int, temperature: float = 1.0,
                          with_entropy: bool = False):
    """(per-token log-probs [rows, completion_length], entropies of the same shape or None), or None when the
    batch is not packable (pack_groups). Masked completion positions hold 0. The logits are divided by
    temperature first, as TRL's GRPO does (log-probs under the sampling distribution)."""
    import torch

    packed = pack_groups(input_ids, attention_mask, completion_length)
    if packed is None:
        return None
    batch, rows, columns = packed
    output = model(**batch, tuneloop_reply_log_probs=True, tuneloop_reply_entropy=with_entropy,
                   tuneloop_temperature=temperature)
    log_probs, entropies = output if with_entropy else (output, None)
    shape = (input_ids.shape[0], completion_length)
    per_token = torch.zeros(shape, dtype=log_probs.dtype, device=log_probs.device).index_put((rows, columns), log_probs)
    if entropies is not None:
        entropies = torch.zeros(shape, dtype=entropies.dtype, device=entropies.device).index_put(
            (rows, columns), entropies)
    return per_token, entropies
