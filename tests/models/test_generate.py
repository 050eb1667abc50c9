"""Batched generation (left padding, KV cache, sorted by length) gives the replies one-at-a-time generation gives."""

from __future__ import annotations

import torch

from tuneloop.models.generate import generate_replies


def test_batched_greedy_replies_equal_one_prompt_at_a_time(tiny_model_dir):
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.tie_word_embeddings = False  # a tied random head just repeats the last prompt token
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).eval()
    with torch.no_grad():  # a random head whose special tokens never win: long, varied replies
        model.lm_head.weight.normal_(std=1.0)
        model.lm_head.weight[tokenizer.all_special_ids] = 0.0
    prompts = [
        tokenizer.apply_chat_template([{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True)
        for text in ("Hi", "When do the Larkspur stores open on a long holiday weekend?", "How long is the warranty?",
                     "Where?", "What does a tune-up cost for an e-bike with a broken chain?")
    ]
    batched = generate_replies(model, tokenizer, prompts, max_new_tokens=12, batch_size=5)
    alone = [generate_replies(model, tokenizer, [p], max_new_tokens=12, batch_size=1)[0] for p in prompts]
    assert batched == alone
    assert len(set(batched)) > 1  # different prompts, different replies: the comparison means something
