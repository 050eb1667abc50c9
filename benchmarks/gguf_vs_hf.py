"""Does the GGUF export answer like the HF export? Greedy replies to a run's held-out questions, scored side by side.

    python benchmarks/gguf_vs_hf.py RUN_DIR --hf EXPORT_HF_DIR --gguf EXPORT_GGUF_DIR/model.gguf [--llama-cpp]

Scores contains_answer (the quickstart's headline metric) for the merged HF export (fp32, transformers), the
GGUF file read back by transformers' GGUF loader (dequantized; its own tokenizer, rebuilt from the GGUF
metadata), and with --llama-cpp the GGUF run by llama.cpp itself (llama-cpp-python), all on the same rendered
prompts and the same rows. Prints one JSON object: scores, the agreement of replies with the HF export's,
and seconds per engine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from tuneloop.data.encode import render_prompt
from tuneloop.data.text_match import contains_answer, token_f1
from tuneloop.models.generate import generate_replies
from tuneloop.models.load import quiet_transformers
from tuneloop.workspace import open_run_dir, read_jsonl


def score(replies: list[str], answers: list[str]) -> float:
    return round(100 * sum(contains_answer(replies, answers)) / len(answers), 2)


def llama_cpp_model(path: Path):
    """llama.cpp's model for the file, without the CPU weight repacking (its AMX q8_0 path crashed in this VM)."""
    import llama_cpp
    from llama_cpp import llama as llama_module

    defaults = llama_cpp.llama_model_default_params

    def without_repacking():
        params = defaults()
        params.use_extra_bufts = False
        return params

    llama_module.llama_cpp.llama_model_default_params = without_repacking
    try:
        return llama_module.Llama(model_path=str(path), n_ctx=1024, n_threads=2, verbose=False, seed=0)
    finally:
        llama_module.llama_cpp.llama_model_default_params = defaults


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--hf", type=Path, required=True, help="`tuneloop export RUN --format hf --merge` output")
    parser.add_argument("--gguf", type=Path, required=True, help="the model.gguf of `--format gguf`")
    parser.add_argument("--llama-cpp", action="store_true", help="also run the GGUF in llama.cpp")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--replies", type=Path, default=None, help="write every engine's replies here (JSON)")
    args = parser.parse_args()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    quiet_transformers()
    torch.manual_seed(0)
    run = open_run_dir(args.run_dir)
    rows = [ex for ex in read_jsonl(run.split("test")) if "messages" in ex][: args.limit]
    answers = [ex.get("answer", ex["messages"][-1]["content"]) for ex in rows]
    references = [ex["messages"][-1]["content"] for ex in rows]
    result: dict = {"rows": len(rows), "metric": "contains_answer"}

    tokenizer = AutoTokenizer.from_pretrained(str(args.hf))
    prompts = [render_prompt(tokenizer, ex["messages"], ex.get("tools")) for ex in rows]
    engines = {
        "hf": lambda: (AutoModelForCausalLM.from_pretrained(str(args.hf), dtype=torch.float32).eval(), tokenizer),
        "gguf_transformers": lambda: (
            AutoModelForCausalLM.from_pretrained(str(args.gguf.parent), gguf_file=args.gguf.name,
                                                 dtype=torch.float32).eval(),
            AutoTokenizer.from_pretrained(str(args.gguf.parent), gguf_file=args.gguf.name)),
    }
    replies: dict[str, list[str]] = {}
    for name, load in engines.items():
        started = time.perf_counter()
        model, engine_tokenizer = load()
        if engine_tokenizer.pad_token is None:
            engine_tokenizer.pad_token = engine_tokenizer.eos_token
        replies[name] = generate_replies(model, engine_tokenizer, prompts, args.max_new_tokens, 16, desc=name)
        result[f"{name}_seconds"] = round(time.perf_counter() - started, 1)
        print(f"{name}: {score(replies[name], answers)} in {result[f'{name}_seconds']} s", file=sys.stderr, flush=True)
        del model
    if args.llama_cpp:
        started = time.perf_counter()
        llm = llama_cpp_model(args.gguf)
        stop = [tokenizer.eos_token] if tokenizer.eos_token else []
        replies["gguf_llama_cpp"] = [
            llm.create_completion(prompt, max_tokens=args.max_new_tokens, temperature=0.0, top_k=1,
                                  stop=stop)["choices"][0]["text"].strip()
            for prompt in prompts
        ]
        result["gguf_llama_cpp_seconds"] = round(time.perf_counter() - started, 1)
        print(f"gguf_llama_cpp: {score(replies['gguf_llama_cpp'], answers)}", file=sys.stderr, flush=True)
    for name, texts in replies.items():
        result[name] = score(texts, answers)
        # token_f1 is 0-100 per row already
        result[f"{name}_token_f1"] = round(sum(token_f1(texts, references)) / len(texts), 2)
        if name != "hf":
            result[f"{name}_same_reply_as_hf"] = round(
                100 * sum(a == b for a, b in zip(texts, replies["hf"], strict=True)) / len(texts), 1)
    if args.replies:
        args.replies.write_text(json.dumps(replies, indent=1))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
