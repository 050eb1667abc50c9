"""The most real tokens/s LoRA training of a model could reach here: its matmul work over the GEMM speed.

Per real token, LoRA training multiplies by every frozen weight twice (forward, and backward to the
input), by the adapters three times (forward, input and weight gradients) and, for reply tokens only,
by the LM head twice. Attention scores add a little. `--reference` adds what DPO's reference pass costs
per token (one forward through the frozen weights and, for reply tokens, the LM head). The script
measures this machine's matmul speed at the model's own shapes (a packed row of `--row-tokens` tokens) in
the dtype training computes in here (bf16 where the CPU runs it fast, else fp32; `--dtype` to choose) and
prints the ceiling: the tokens/s a trainer would reach if it did nothing but those matmuls at that speed.
Compare it with `benchmarks/train_throughput.py`'s and `preference_throughput.py`'s figures: a target above
the ceiling cannot be met on this machine.

    .venv/bin/python benchmarks/throughput_ceiling.py              # smollm2-135m-instruct, LoRA r=16
    .venv/bin/python benchmarks/throughput_ceiling.py --reference --row-tokens 1200 --reply-fraction 0.6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def gemm_tflops(rows: int, inner: int, outer: int, dtype, repeats: int = 20) -> float:
    import torch

    left, right = torch.randn(rows, inner, dtype=dtype), torch.randn(inner, outer, dtype=dtype)
    for _ in range(3):
        left @ right
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        left @ right
        timings.append(time.perf_counter() - started)
    return 2 * rows * inner * outer / statistics.median(timings) / 1e12


def main() -> int:
    import torch
    from transformers import AutoConfig

    from tuneloop.models.registry import resolve_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--row-tokens", type=int, default=830, help="tokens in a packed row (8 Alpaca chats)")
    parser.add_argument("--reply-fraction", type=float, default=0.547, help="share of tokens with a loss "
                        "(measured on the first 96 Alpaca rows as chat)")
    parser.add_argument("--context", type=int, default=100, help="mean tokens per packed example")
    parser.add_argument("--reference", action="store_true", help="add a reference forward per token (DPO)")
    parser.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto",
                        help="the matmul dtype (auto: the one tuneloop trains in on this machine)")
    args = parser.parse_args()
    from tuneloop.models.device import pick_dtype

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32}.get(args.dtype) or pick_dtype("cpu")

    config = AutoConfig.from_pretrained(resolve_model(args.model, lambda *a: None)).get_text_config()
    hidden, inner, layers = config.hidden_size, config.intermediate_size, config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    query, key_value = config.num_attention_heads * head_dim, config.num_key_value_heads * head_dim
    # (input width, output width) of each linear map in one layer: q, k, v, o, gate, up, down
    shapes = [(hidden, query), (hidden, key_value), (hidden, key_value), (query, hidden),
              (hidden, inner), (hidden, inner), (inner, hidden)]
    frozen = layers * sum(i * o for i, o in shapes)
    adapters = layers * sum(args.rank * (i + o) for i, o in shapes)
    flops = {
        "frozen weights, forward + input gradient": 4 * frozen,
        "LoRA adapters, forward + both gradients": 6 * adapters,
        "LM head on reply tokens, forward + input gradient": 4 * hidden * config.vocab_size * args.reply_fraction,
        "attention scores, forward + backward": 3 * 2 * 2 * layers * query * args.context / 2,
    }
    if args.reference:
        flops["reference pass: frozen weights and LM head on reply tokens, forward"] = (
            2 * frozen + 2 * hidden * config.vocab_size * args.reply_fraction)
    per_token = sum(flops.values())
    speeds = {f"{i}x{o}": gemm_tflops(args.row_tokens, i, o, dtype) for i, o in sorted(set(shapes))}
    best = max(speeds.values())
    print(json.dumps({
        "model": args.model, "mflop_per_real_token": round(per_token / 1e6, 1),
        "mflop_by_part": {k: round(v / 1e6, 1) for k, v in flops.items()},
        "dtype": str(dtype).removeprefix("torch."),
        "gemm_tflops_at_model_shapes": {k: round(v, 3) for k, v in speeds.items()},
        "ceiling_tokens_per_second_at_best_gemm_speed": round(best * 1e12 / per_token),
        "threads": torch.get_num_threads(),
    }, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
