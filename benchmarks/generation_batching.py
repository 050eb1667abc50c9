"""Evaluation generation: tuneloop's batched greedy decoding (KV cache, left padding) against one prompt at a time.

Uses the demo's 60 held-out questions (tuneloop.demos.quickstart, our own text) on smollm2-135m-instruct in the
compute dtype the evaluate stage uses. Prints seconds for both ways, the speed-up and the share of replies
that are identical (greedy decoding: batching should not change them; in bf16, padding can flip a
near-tie now and then, so fp32 is also offered).

    .venv/bin/python benchmarks/generation_batching.py [--batch-size 16] [--max-new-tokens 64] [--dtype fp32]
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> int:
    from tuneloop.data.encode import render_prompt
    from tuneloop.demos.quickstart import demo_rows
    from tuneloop.models.device import pick_device, pick_dtype
    from tuneloop.models.generate import generate_replies
    from tuneloop.models.load import load_causal_lm, load_tokenizer
    from tuneloop.models.registry import resolve_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto")
    args = parser.parse_args()

    device = pick_device("auto")
    dtype = pick_dtype(device, args.dtype)
    path = resolve_model(args.model, lambda *a: None)
    tokenizer = load_tokenizer(path)
    model = load_causal_lm(path, dtype, device).eval()
    _, test_rows = demo_rows()
    prompts = [render_prompt(tokenizer, row["messages"]) for row in test_rows]

    generate_replies(model, tokenizer, prompts[:2], 4, 2)  # warm-up: first calls pay for kernel set-up
    started = time.perf_counter()
    batched = generate_replies(model, tokenizer, prompts, args.max_new_tokens, args.batch_size)
    batched_seconds = time.perf_counter() - started
    started = time.perf_counter()
    alone = [generate_replies(model, tokenizer, [p], args.max_new_tokens, 1)[0] for p in prompts]
    alone_seconds = time.perf_counter() - started
    same = sum(a == b for a, b in zip(batched, alone, strict=True))
    print(json.dumps({
        "model": args.model, "device": device, "dtype": str(dtype).removeprefix("torch."), "prompts": len(prompts),
        "batch_size": args.batch_size, "max_new_tokens": args.max_new_tokens,
        "batched_seconds": round(batched_seconds, 1), "one_at_a_time_seconds": round(alone_seconds, 1),
        "speedup": round(alone_seconds / batched_seconds, 2), "identical_replies": f"{same}/{len(prompts)}",
    }))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
