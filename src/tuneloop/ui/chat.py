"""Side-by-side chat: one prompt to a run's tuned model and to its untuned baseline (or to a second run).

Models stay loaded between prompts (the two most recent runs). Every reply is written to the serve store as
a request, so thumbs and corrections given here are rows `tuneloop feedback export` reads like the server's.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

from tuneloop.errors import TuneloopError
from tuneloop.serve.store import Store, utcnow

MAX_LOADED = 2


@dataclass
class Reply:
    label: str
    text: str
    request_id: str
    seconds: float


class ChatModels:
    """Loaded runs (tuned model, tokenizer, base path), a lock around generation, and the store to record to."""

    def __init__(self, store: Store):
        self.store = store
        self.loaded: OrderedDict[str, tuple] = OrderedDict()
        self.lock = threading.Lock()

    def _load(self, run_dir: Path):
        key = str(run_dir.resolve())
        if key in self.loaded:
            self.loaded.move_to_end(key)
            return self.loaded[key]
        from tuneloop.chat import load_chat_model
        from tuneloop.config.load import load_run_config
        from tuneloop.models.load import quiet_transformers
        from tuneloop.workspace import open_run_dir

        quiet_transformers()
        run = open_run_dir(run_dir)
        if run.data_format() in ("classification", "token_classification"):
            raise TuneloopError(f"{run_dir.name} is a classification run: it labels text rather than chatting.")
        config = load_run_config(run)
        model, tokenizer = load_chat_model(config, run)
        self.loaded[key] = (model, tokenizer, config)
        while len(self.loaded) > MAX_LOADED:
            self.loaded.popitem(last=False)
        return self.loaded[key]

    def _generate(self, run_dir: Path, messages: list[dict], baseline: bool, max_new_tokens: int) -> tuple[str, float]:
        from tuneloop.chat import reply

        model, tokenizer, config = self._load(run_dir)
        started = time.perf_counter()
        if baseline:
            if not hasattr(model, "disable_adapter"):
                raise TuneloopError(f"{run_dir.name} is a full fine-tune: its baseline is another model; compare "
                                    "it with a second run instead.")
            with model.disable_adapter():
                text = reply(model, tokenizer, messages, max_new_tokens)
        else:
            text = reply(model, tokenizer, messages, max_new_tokens)
        return text, time.perf_counter() - started

    def answer(self, run_dir: Path, messages: list[dict], baseline: bool, max_new_tokens: int = 128) -> Reply:
        """One reply, recorded in the store as a chat request (model: the run's name, variant: tuned or baseline)."""
        with self.lock:
            text, seconds = self._generate(run_dir, messages, baseline, max_new_tokens)
            config = self.loaded[str(run_dir.resolve())][2]
        request_id = f"chatcmpl-ui-{secrets.token_hex(12)}"
        label = f"{run_dir.name} (baseline: {Path(config.model.name).name})" if baseline else f"{run_dir.name} (tuned)"
        now = utcnow()
        self.store.record_request(
            id=request_id, created_at=now, finished_at=now, endpoint="chat", model=run_dir.name,
            variant=f"{run_dir.name}:baseline" if baseline else run_dir.name, run_dir=str(run_dir.resolve()),
            base_model=config.model.name, adapter=None if baseline else str(run_dir / "adapter"),
            messages=messages, params={"max_tokens": max_new_tokens, "temperature": 0.0, "source": "ui"},
            reply=text, finish_reason="stop", latency_s=seconds, status=200)
        return Reply(label, text, request_id, seconds)
