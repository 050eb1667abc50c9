"""Batched greedy generation with the KV cache: prompts sorted by length, left-padded, order restored.

Encoder-decoder models (T5, BART) read the prompt with their encoder and return only the reply;
their prompts get the tokenizer's special tokens (T5's closing </s>) as in training.
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm


@torch.inference_mode()
def generate_replies(
    model, tokenizer, prompts: list[str], max_new_tokens: int, batch_size: int, desc: str = "generate",
    max_prompt_tokens: int | None = None,
) -> list[str]:
    """Greedy replies to already-rendered prompts (chat template applied), in the order given.

    max_prompt_tokens truncates longer prompts (encoder-decoder sources, cut at the training length).
    """
    device = next(model.parameters()).device
    encoder_decoder = getattr(model.config, "is_encoder_decoder", False)
    previous_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # so every prompt ends where generation starts
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    replies: list[str] = [""] * len(prompts)
    stop_ids = _stop_token_ids(model, tokenizer)
    try:
        with tqdm(total=len(prompts), desc=desc, unit="row", dynamic_ncols=True, leave=False) as bar:
            for start in range(0, len(order), batch_size):
                batch = order[start : start + batch_size]
                encoded = tokenizer(
                    [prompts[i] for i in batch], return_tensors="pt", padding=True,
                    add_special_tokens=encoder_decoder, truncation=max_prompt_tokens is not None,
                    max_length=max_prompt_tokens,
                ).to(device)
                output = model.generate(
                    **encoded,
                    max_new_tokens=max_new_tokens,
                    do_sample=False,
                    temperature=None,
                    top_p=None,
                    top_k=None,
                    eos_token_id=stop_ids,
                    pad_token_id=tokenizer.pad_token_id,
                )
                # A decoder-only model returns prompt and reply; an encoder-decoder only the reply.
                new_tokens = output if encoder_decoder else output[:, encoded["input_ids"].shape[1] :]
                for index, tokens in zip(batch, new_tokens, strict=True):
                    replies[index] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
                bar.update(len(batch))
    finally:
        tokenizer.padding_side = previous_side
    return replies


def _stop_token_ids(model, tokenizer) -> list[int]:
    ids = set()
    configured = getattr(model.generation_config, "eos_token_id", None)
    for value in configured if isinstance(configured, list) else [configured]:
        if value is not None:
            ids.add(int(value))
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)
