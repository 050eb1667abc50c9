"""Helpers for the browser tests: a workspace with a tiny example config, a real `tuneloop ui` server on a free
loopback port, and Debian's chromium driven by Playwright (its own browser download would need the internet)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import FACTS, chat_row, write_config, write_jsonl

SRC = Path(__file__).resolve().parents[2] / "src"
CHROMIUM = os.environ.get("TUNELOOP_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def ui_env() -> dict:
    return {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
            "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


class UiServer:
    def __init__(self, workspace: Path, examples: Path, log: Path, *extra: str):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workspace, self.log_path = workspace, log
        self.command = [sys.executable, "-m", "tuneloop.cli", "ui", str(workspace), "--port", str(self.port),
                        "--examples", str(examples), *extra]
        self.log = log.open("ab")
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(self.command, stdout=self.log, stderr=subprocess.STDOUT, env=ui_env())
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tuneloop ui exited: {self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise RuntimeError(f"tuneloop ui did not start: {self.log_path.read_text()}")

    def terminate(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()

    def output(self) -> str:
        self.log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.terminate()
        self.log.close()


@pytest.fixture(scope="module")
def ui_workspace(tmp_path_factory, tiny_model_dir) -> dict:
    """runs/ (empty) and examples/tiny.yaml: the tiny random Llama, long enough (450 steps) to watch live."""
    root = tmp_path_factory.mktemp("ui")
    train = write_jsonl(root / "data" / "train.jsonl", [chat_row(q, a, k) for q, a, k in FACTS] * 4)
    test = write_jsonl(root / "data" / "test.jsonl", [chat_row("Tell me: " + q.lower(), a, k) for q, a, k in FACTS])
    examples = root / "examples"
    examples.mkdir()
    write_config(examples / "tiny.yaml", {
        "output_dir": "runs/tiny",
        "model": {"name": str(tiny_model_dir), "dtype": "fp32", "device": "cpu"},
        "data": {"train_file": str(train), "test_file": str(test), "max_length": 64,
                 # loading the language detector's models takes longer than the rest of the audit: not needed here
                 "audit": {"checks": ["duplicates", "leakage", "pii", "lengths"]}},
        "train": {"method": "lora", "preset": "none", "max_steps": 450, "learning_rate": 1e-2, "batch_size": 4,
                  "eval_every": 90, "save_every": 90, "logging_steps": 3, "packing": False,
                  "early_stopping_patience": None,  # every step runs: the test counts the logged points
                  "lora": {"rank": 4, "alpha": 16, "dropout": 0.0}},
        "evaluate": {"max_new_tokens": 8, "batch_size": 6},
        "tracking": {"backend": "none"},
    })
    (root / "runs").mkdir()
    return {"root": root, "runs": root / "runs", "examples": examples, "train": train}


@pytest.fixture(scope="module")
def ui_server(ui_workspace):
    server = UiServer(ui_workspace["runs"], ui_workspace["examples"], ui_workspace["root"] / "ui.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def browser():
    if not (Path(CHROMIUM).is_file() and os.access(CHROMIUM, os.X_OK)):
        pytest.skip(f"chromium is not installed at {CHROMIUM}: `sudo apt-get install chromium` (or `make system-deps`"
                    " as root), or set TUNELOOP_CHROMIUM to its path")
    from playwright.sync_api import sync_playwright  # the dev extra installs it; only the browser may be missing

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, headless=True,
                                              args=["--no-sandbox", "--disable-gpu"])
        yield launched
        launched.close()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    opened = context.new_page()
    opened.set_default_timeout(60_000)
    yield opened
    context.close()
