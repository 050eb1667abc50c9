"""Helpers for the serve tests: adapter run directories on the tiny Llama, and a server subprocess."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

PROMPTS = ["When do the Larkspur stores open?", "How long is the warranty?", "Where is the head office?",
           "What does a tune-up cost?", "Which day are shops closed?", "How far does the e-bike go?"]

SRC = Path(__file__).resolve().parents[2] / "src"


def make_adapter_run(root: Path, base: Path, seed: int, train_prompts: list[str]) -> Path:
    """A run directory as `tuneloop train` leaves it: config.yaml, data/train.jsonl and adapter/ (LoRA)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root.mkdir(parents=True)
    (root / "data").mkdir()
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": "An answer."}]}
            for q in train_prompts]
    (root / "data" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "config.yaml").write_text(yaml.safe_dump({
        "output_dir": str(root), "model": {"name": str(base), "dtype": "fp32", "device": "cpu"},
        "data": {"train_file": str(root / "data" / "train.jsonl"), "max_length": 64},
        "train": {"method": "lora", "preset": "none"}, "tracking": {"backend": "none"}}))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    # init_lora_weights=False draws both LoRA matrices at random, so each adapter changes the replies.
    peft_model = get_peft_model(model, LoraConfig(r=8, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj",
                                                                                      "down_proj"],
                                                  init_lora_weights=False))
    peft_model.save_pretrained(root / "adapter")
    AutoTokenizer.from_pretrained(base).save_pretrained(root / "adapter")
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """`tuneloop serve ...` in a subprocess on a free loopback port (or `port`); waits for /health."""

    def __init__(self, args: list[str], log: Path, env: dict | None = None, port: int | None = None,
                 start_timeout: float = 90):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        environment = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                       "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
                       # One thread: the tiny model gains nothing from more, and a busy machine loses a lot.
                       "OMP_NUM_THREADS": "1", **(env or {})}
        self.handle = log.open("ab")
        self.process = subprocess.Popen([sys.executable, "-m", "tuneloop.cli", "serve", *args, "--port",
                                         str(self.port)], stdout=self.handle, stderr=subprocess.STDOUT,
                                        env=environment)
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{log.read_text()}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not start in {start_timeout:g} s:\n{log.read_text()}")

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        self.handle.close()

    def stop(self) -> None:  # also fine after kill9
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.handle.close()
