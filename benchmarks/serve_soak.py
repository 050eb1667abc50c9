"""Soak: minutes of mixed traffic (two LoRA adapters on one base, an A/B alias, half of it streamed, feedback)
against `tuneloop serve`, sampling the server's resident memory (RSS) to see whether it stays flat.

    nice -n 10 python benchmarks/serve_soak.py --minutes 4 --clients 12 --json soak.json

Two adapter runs are made on smollm2-135m-instruct (LoRA r8 with small random weights, so they answer
differently); the store is SQLite in a temp directory. Prints RSS after warm-up, at the end, the peak, and the
slope of a line fitted to the second half (MB per minute): flat memory means a slope near zero.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_load import MODEL, QUESTIONS, free_port, rss_mb, start, stop  # noqa: E402


def adapter_run(root: Path, name: str, seed: int) -> Path:
    import torch
    import yaml
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = root / name
    (run / "data").mkdir(parents=True)
    (run / "data" / "train.jsonl").write_text("".join(json.dumps({"messages": [
        {"role": "user", "content": q}, {"role": "assistant", "content": "..."}]}) + "\n" for q in QUESTIONS))
    (run / "config.yaml").write_text(yaml.safe_dump({"output_dir": str(run), "model": {"name": str(MODEL)},
                                                     "data": {"train_file": str(run / "data" / "train.jsonl")}}))
    torch.manual_seed(seed)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(MODEL), LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    with torch.no_grad():
        for parameter_name, parameter in model.named_parameters():
            if "lora_B" in parameter_name:
                parameter.normal_(0, 0.002)
    model.save_pretrained(run / "adapter")
    AutoTokenizer.from_pretrained(MODEL).save_pretrained(run / "adapter")
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=4.0)
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the server")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", type=Path, help="make the runs and the store here and keep them (for monitor)")
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    src = Path(__file__).resolve().parents[1] / "src"
    os.environ["PYTHONPATH"] = f"{src}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        runs = [adapter_run(root, "soak-a", 1), adapter_run(root, "soak-b", 2)]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start([sys.executable, "-m", "tuneloop.cli", "serve", *map(str, runs), "--split",
                        "bot=soak-a:50,soak-b:50", "--store", str(root / "serve.db"), "--port", str(port)], url,
                       root / "server.log")
        counts = {"ok": 0, "errors": 0, "streamed": 0, "feedback": 0}
        samples: list[tuple[float, float]] = []
        stop_at = time.monotonic() + args.minutes * 60
        lock = threading.Lock()

        def client(index: int) -> None:
            rng = random.Random(index)
            with httpx.Client(base_url=url, timeout=300) as http:
                while time.monotonic() < stop_at:
                    body = {"model": rng.choice(["soak-a", "soak-b", "bot"]), "user": f"u{rng.randrange(50)}",
                            "messages": [{"role": "user", "content": rng.choice(QUESTIONS)}],
                            "max_tokens": rng.randint(8, 48), "temperature": rng.choice([0, 0.7])}
                    try:
                        if rng.random() < 0.5:
                            body["stream"] = True
                            with http.stream("POST", "/v1/chat/completions", json=body) as response:
                                lines = [line for line in response.iter_lines() if line.startswith("data: ")]
                            ok = response.status_code == 200 and lines[-1] == "data: [DONE]"
                            request_id = json.loads(lines[0][6:])["id"] if ok else None
                            with lock:
                                counts["streamed"] += ok
                        else:
                            response = http.post("/v1/chat/completions", json=body)
                            ok = response.status_code == 200
                            request_id = response.json()["id"] if ok else None
                        if ok and rng.random() < 0.3:
                            feedback = http.post("/v1/feedback", json={"id": request_id, "rating": rng.choice(
                                ["up", "down"])})
                            with lock:
                                counts["feedback"] += feedback.status_code == 201
                        with lock:
                            counts["ok" if ok else "errors"] += 1
                    except httpx.HTTPError:
                        with lock:
                            counts["errors"] += 1

        began = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(args.clients)]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            samples.append((time.monotonic() - began, rss_mb(server.pid)))
            print(f"{samples[-1][0]:6.0f} s  RSS {samples[-1][1]:7.1f} MB  {counts}", flush=True)
            time.sleep(5)
        stop(server)
    import numpy as np

    warm = [s for s in samples if s[0] >= 30] or samples
    second_half = [s for s in samples if s[0] >= samples[-1][0] / 2]
    slope = float(np.polyfit([s[0] / 60 for s in second_half], [s[1] for s in second_half], 1)[0])
    result = {"minutes": args.minutes, "clients": args.clients, **counts, "rss_after_warmup_mb": warm[0][1],
              "rss_end_mb": samples[-1][1], "rss_peak_mb": max(s[1] for s in samples),
              "slope_second_half_mb_per_min": round(slope, 2), "samples": samples, "load": os.getloadavg()}
    print(f"RSS after warm-up {result['rss_after_warmup_mb']:.0f} MB, end {result['rss_end_mb']:.0f} MB, peak "
          f"{result['rss_peak_mb']:.0f} MB; second-half slope {slope:+.2f} MB/min; {counts}; load {os.getloadavg()}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
