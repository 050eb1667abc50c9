"""Load test: 32 concurrent clients (the official openai client) against `tuneloop serve` and `transformers serve`.

Same model directory, same prompts, same max_tokens, greedy, in the same run, one server at a time on loopback.
Reports errors, p50/p99 latency and generated tokens/s for each, plus tuneloop answering one request at a time
(one client), and the ratios. Generated tokens are counted by re-tokenizing each reply with the model's
tokenizer, so both servers are counted the same way.

    nice -n 10 python benchmarks/serve_load.py                    # smollm2-135m-instruct, bf16 on a fast-bf16 CPU
    python benchmarks/serve_load.py --clients 32 --requests 96 --max-tokens 64 --json serve_load.json
    python benchmarks/serve_load.py --transformers-cb              # also transformers serve --continuous-batching

tuneloop serves a run directory whose model/ is the same weights (a symlink), so no adapter overhead is added
on either side. Both servers are stopped at the end; nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

MODEL = Path.home() / ".cache/tuneloop/models/smollm2-135m-instruct"
QUESTIONS = [
    "How long do I have to return a bike?", "What does a tune-up cost?", "Do you ship to Norway?",
    "Can I change my delivery address after ordering?", "Which payment methods do you accept?",
    "How do I reset the e-bike display?", "What is covered by the frame warranty?", "How far can the e-bike go?",
    "Explain in two sentences why bicycle chains need oil.", "Give me three tips for riding in the rain.",
    "What should I check before a long ride?", "How often should tyres be replaced?",
    "Write a short, friendly reply to a customer whose order is late.", "What is a good saddle height?",
    "How do disc brakes differ from rim brakes?", "Suggest a name for a bike shop in the mountains.",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited ({process.returncode}):\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server not ready after {timeout} s:\n{log.read_text()[-3000:]}")


def start(command: list[str], url: str, log: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env)
    wait_ready(url, process, log)
    return process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its children (transformers serve may fork)."""
    total = 0
    for candidate in [pid] + [int(p) for p in _children(pid)]:
        try:
            for line in Path(f"/proc/{candidate}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _children(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []


def load(base_url: str, model: str, prompts: list[str], clients: int, max_tokens: int, tokenizer) -> dict:
    import openai

    client = openai.OpenAI(base_url=base_url + "/v1", api_key="none", max_retries=0, timeout=600)

    def one(prompt: str) -> tuple[float, int, str | None]:
        began = time.perf_counter()
        try:
            reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}],
                                                   max_tokens=max_tokens, temperature=0)
        except Exception as exc:  # counted as an error, not raised: the benchmark reports them
            return time.perf_counter() - began, 0, f"{type(exc).__name__}: {exc}"[:200]
        text = reply.choices[0].message.content or ""
        return time.perf_counter() - began, len(tokenizer(text, add_special_tokens=False)["input_ids"]), None

    began = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        results = list(pool.map(one, prompts))
    wall = time.perf_counter() - began
    latencies = sorted(r[0] for r in results if r[2] is None)
    tokens = sum(r[1] for r in results)
    errors = [r[2] for r in results if r[2] is not None]
    return {"requests": len(prompts), "clients": clients, "errors": len(errors), "error_examples": errors[:3],
            "wall_s": round(wall, 2), "generated_tokens": tokens, "tokens_per_s": round(tokens / wall, 1),
            "p50_s": round(statistics.median(latencies), 3) if latencies else None,
            "p99_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 3) if latencies else None}


def tuneloop_run_dir(root: Path, dtype: str) -> Path:
    """A run directory whose model/ is the model directory itself: tuneloop serves exactly those weights."""
    run = root / "smollm2-base"
    run.mkdir()
    (run / "model").symlink_to(MODEL)
    (run / "config.yaml").write_text(json.dumps({"output_dir": str(run), "model": {"name": str(MODEL),
                                                                                    "dtype": dtype},
                                                 "data": {"train_file": str(run / "unused.jsonl")}}))
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--requests", type=int, default=96)
    parser.add_argument("--sequential-requests", type=int, default=12)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    parser.add_argument("--transformers-cb", action="store_true", help="also transformers serve --continuous-batching")
    parser.add_argument("--skip-transformers-default", action="store_true",
                        help="leave out transformers serve's default mode (with --transformers-cb: only that mode)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads per server (OMP_NUM_THREADS); on a shared, oversubscribed machine 1 is "
                             "fastest: measured here, 16 tokens took 29 s with 2 threads and 2.6 s with 1")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # both servers inherit it
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(MODEL)
    prompts = [QUESTIONS[i % len(QUESTIONS)] for i in range(args.requests)]
    warmup = QUESTIONS[:2]
    results = {"load_before": os.getloadavg(), "model": str(MODEL), "max_tokens": args.max_tokens,
               "dtype": args.dtype, "threads": args.threads, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run = tuneloop_run_dir(root, args.dtype)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        src = Path(__file__).resolve().parents[1] / "src"
        env_path = f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
        os.environ["PYTHONPATH"] = env_path
        command = [sys.executable, "-m", "tuneloop.cli", "serve", str(run), "--port", str(port), "--no-store",
                   "--max-batch-size", str(args.clients), "--max-concurrent", str(4 * args.clients)]
        print("tuneloop serve ...", flush=True)
        server = start(command, url, root / "tuneloop.log")
        try:
            load(url, run.name, warmup, 2, args.max_tokens, tokenizer)
            results["tuneloop"] = load(url, run.name, prompts, args.clients, args.max_tokens, tokenizer)
            results["tuneloop"]["rss_mb"] = round(rss_mb(server.pid))
            print("tuneloop", results["tuneloop"], flush=True)
            results["tuneloop_sequential"] = load(url, run.name, prompts[: args.sequential_requests], 1,
                                                  args.max_tokens, tokenizer)
            print("tuneloop one at a time", results["tuneloop_sequential"], flush=True)
        finally:
            stop(server)
        variants = ([] if args.skip_transformers_default else [("transformers_serve", [])]) + (
            [("transformers_serve_cb", ["--continuous-batching"])] if args.transformers_cb else [])
        for key, extra in variants:
            port = free_port()
            url = f"http://127.0.0.1:{port}"
            torch_dtype = {"bf16": "bfloat16", "fp32": "float32"}[args.dtype]
            command = [str(Path(sys.executable).with_name("transformers")), "serve", str(MODEL), "--host",
                       "127.0.0.1", "--port", str(port), "--dtype", torch_dtype, "--device", "cpu", *extra]
            print(f"transformers serve {' '.join(extra)} ...", flush=True)
            server = start(command, url, root / f"{key}.log")
            try:
                load(url, str(MODEL), warmup, 2, args.max_tokens, tokenizer)
                results[key] = load(url, str(MODEL), prompts, args.clients, args.max_tokens, tokenizer)
                results[key]["rss_mb"] = round(rss_mb(server.pid))
                print(key, results[key], flush=True)
            finally:
                stop(server)
    results["load_after"] = os.getloadavg()
    ours, sequential = results["tuneloop"], results["tuneloop_sequential"]
    print(f"\n{'server':<28}{'errors':>7}{'p50 s':>9}{'p99 s':>9}{'tokens/s':>10}")
    for key in ("tuneloop", "tuneloop_sequential", "transformers_serve", "transformers_serve_cb"):
        if key in results:
            r = results[key]
            print(f"{key:<28}{r['errors']:>7}{r['p50_s'] or 0:>9.2f}{r['p99_s'] or 0:>9.2f}{r['tokens_per_s']:>10.1f}")
    results["ratio_vs_sequential"] = round(ours["tokens_per_s"] / max(sequential["tokens_per_s"], 1e-9), 2)
    print(f"tuneloop ({args.clients} clients) / tuneloop one at a time: {results['ratio_vs_sequential']}x")
    for key in ("transformers_serve", "transformers_serve_cb"):
        if key in results:
            results[f"ratio_vs_{key}"] = round(ours["tokens_per_s"] / max(results[key]["tokens_per_s"], 1e-9), 2)
            print(f"tuneloop / {key}: {results[f'ratio_vs_{key}']}x")
    print(f"load average before {results['load_before']}, after {results['load_after']}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
