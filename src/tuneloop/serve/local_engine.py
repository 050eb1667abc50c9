"""The in-process engine: tuned runs loaded with transformers, concurrent requests batched continuously.

LoRA runs on the same base (same path, dtype and device) share one copy of the base weights: the first one
wraps it in a PeftModel and the others are loaded as further adapters, so one batch mixes requests for
different adapters (decode.py). A full fine-tune is a model of its own. One worker thread runs every model
(the accelerator or the CPU cores are the bottleneck, not Python); the event loop only queues requests and
relays their tokens.

`load(model_id, run_dir)` swaps what answers for a model id while serving: the new adapter is loaded beside
the old one, new requests go to it at once, and the old one is deleted when its last row finishes.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import torch

from tuneloop.errors import ModelError
from tuneloop.serve import decode
from tuneloop.serve.engine import Finished, GenerationRequest, LoadedModel, TextDelta
from tuneloop.serve.run_weights import RunWeights, read_run

log = logging.getLogger("tuneloop.serve")


@dataclass
class _Group:
    """One copy of model weights in memory and the rows waiting for or running on it."""

    model: object
    peft: bool
    device: str
    pad_id: int
    context_length: int
    waiting: deque = field(default_factory=deque)
    batch: decode.Batch | None = None
    retired: set[str] = field(default_factory=set)  # adapters replaced by load(), deleted once unused


@dataclass
class _Served:
    info: LoadedModel
    group: _Group
    tokenizer: object
    adapter_name: str
    stop_ids: set[int]


def weights_version(path: Path) -> str:
    """The first 12 hex digits of the sha256 of a weights directory's safetensors (or bin) files."""
    digest = hashlib.sha256()
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
    for file in files:
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:12]


class LocalEngine:
    """Generate with transformers in this process; see the module docstring."""

    def __init__(self, max_batch_size: int = 32, device: str | None = None, dtype: str | None = None):
        self.max_batch_size = max_batch_size
        self.device, self.dtype = device, dtype  # overrides of the runs' model.device / model.dtype
        self._served: dict[str, _Served] = {}
        self._groups: dict[tuple, _Group] = {}
        self._names = (f"adapter{i}" for i in itertools.count())
        self._wake = threading.Condition()  # guards the waiting queues; held only for moments
        self._model_lock = threading.Lock()  # held by the worker during a step and by load() while loading
        self._stopping = False
        self._thread: threading.Thread | None = None

    # -- loading ---------------------------------------------------------------------------------------------
    def add(self, model_id: str, weights: RunWeights) -> LoadedModel:
        """Load a run's weights under model_id (before start, or from load() while serving)."""
        from tuneloop.models.load import load_causal_lm, load_tokenizer

        source = weights.adapter or weights.full_model
        tokenizer = load_tokenizer(str(source))
        if weights.adapter is not None:
            key = ("base", weights.base, str(weights.dtype), weights.device)
            group = self._groups.get(key)
            name = next(self._names)
            if group is None:
                from peft import PeftModel

                base = load_causal_lm(weights.base, weights.dtype, weights.device)
                model = PeftModel.from_pretrained(base, str(weights.adapter), adapter_name=name)
                group = self._groups[key] = self._new_group(model, True, weights.device, tokenizer)
            else:
                group.model.load_adapter(str(weights.adapter), adapter_name=name)
            group.model.eval()
        else:
            key = ("full", str(weights.full_model), str(weights.dtype), weights.device)
            model = load_causal_lm(str(weights.full_model), weights.dtype, weights.device).eval()
            group = self._groups[key] = self._new_group(model, False, weights.device, tokenizer)
            name = decode.BASE_ADAPTER
        info = LoadedModel(model_id, weights.run_dir, weights.base, weights.adapter, weights_version(source),
                           group.context_length)
        previous = self._served.get(model_id)
        self._served[model_id] = _Served(info, group, tokenizer, name, _stop_ids(group.model, tokenizer))
        if previous is not None and previous.group.peft:
            previous.group.retired.add(previous.adapter_name)
        return info

    @staticmethod
    def _new_group(model, peft: bool, device: str, tokenizer) -> _Group:
        config = model.config
        context = getattr(config, "max_position_embeddings", None) or 2048
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return _Group(model, peft, device, int(pad or 0), int(context))

    async def load(self, model_id: str, run_dir: Path) -> LoadedModel:
        weights = read_run(run_dir, self.device, self.dtype)

        def locked_add() -> LoadedModel:
            with self._model_lock:  # the worker steps the models only while holding it
                return self.add(model_id, weights)

        return await asyncio.to_thread(locked_add)

    async def unload(self, model_id: str) -> None:
        def locked_remove() -> None:
            with self._model_lock:
                served = self._served.pop(model_id, None)
                if served is not None and served.group.peft:
                    served.group.retired.add(served.adapter_name)

        await asyncio.to_thread(locked_remove)

    def models(self) -> dict[str, LoadedModel]:
        return {model_id: served.info for model_id, served in self._served.items()}

    # -- tokenizing ------------------------------------------------------------------------------------------
    def encode_chat(self, model_id: str, messages: list[dict]) -> list[int]:
        tokenizer = self._served[model_id].tokenizer
        if not getattr(tokenizer, "chat_template", None):
            from tuneloop.serve.protocol import APIError

            raise APIError(400, f"the model '{model_id}' has no chat template (a base-model run trained on plain "
                           "text); use /v1/completions with a prompt instead", "messages")
        try:
            text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as exc:  # jinja's TemplateError: e.g. a template that insists roles alternate
            from tuneloop.serve.protocol import APIError

            raise APIError(400, f"messages: the chat template of '{model_id}' rejects them ({exc}); check the "
                           "roles and their order", "messages") from None
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    def encode_text(self, model_id: str, text: str) -> list[int]:
        return self._served[model_id].tokenizer(text)["input_ids"]

    # -- generation ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="tuneloop-engine", daemon=True)
        self._thread.start()

    async def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TextDelta | Finished]:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        with self._wake:
            served = self._served.get(request.model_id)
            if served is None:
                raise ModelError(f"model {request.model_id!r} is not loaded")
            row = decode.Row(request, served.tokenizer, served.stop_ids,
                             lambda event: loop.call_soon_threadsafe(events.put_nowait, event), served.adapter_name)
            served.group.waiting.append(row)
            self._wake.notify()
        try:
            while True:
                event = await events.get()
                if isinstance(event, Exception):
                    raise ModelError(f"generation failed for {request.model_id!r}: {event}")
                if isinstance(event, Finished):
                    event.model = served.info
                yield event
                if isinstance(event, Finished):
                    return
        finally:
            row.cancelled = True  # the client left (or we are done): the worker drops the row

    def _work(self) -> None:
        while True:
            with self._wake:
                while not self._stopping and not any(g.waiting or g.batch for g in self._groups.values()):
                    self._wake.wait()
                if self._stopping:
                    return
            with self._model_lock:
                for group in list(self._groups.values()):
                    if group.waiting or group.batch:
                        try:
                            self._advance(group)
                        except Exception as exc:  # a bug or out of memory: fail these rows, keep serving
                            log.exception("generation failed")
                            self._fail(group, exc)
                        self._delete_retired(group)
            time.sleep(0)  # let load() take the model lock between steps

    def _advance(self, group: _Group) -> None:
        """One decoding step for the group's batch, admitting waiting rows first when there is room."""
        room = self.max_batch_size - (len(group.batch.rows) if group.batch else 0)
        mergeable = group.batch is None or decode.can_merge(group.batch.cache)
        joining = []
        if room > 0 and mergeable:
            with self._wake:
                while group.waiting and len(joining) < room:
                    row = group.waiting.popleft()
                    if not row.cancelled:
                        joining.append(row)
        if joining:
            joined, logits = decode.prefill(group.model, joining, group.pad_id, group.device, group.peft)
            self._take(group, joined, logits)
            if joined.rows:
                group.batch = joined if group.batch is None else decode.merge(group.batch, joined)
            return
        if group.batch is None:
            return
        logits = decode.step(group.model, group.batch, group.peft)
        self._take(group, group.batch, logits)
        if not group.batch.rows:
            group.batch = None

    def _take(self, group: _Group, batch: decode.Batch, logits: torch.Tensor) -> None:
        tokens = decode.sample(logits, batch.rows)
        keep = []
        for index, (row, token) in enumerate(zip(batch.rows, tokens, strict=True)):
            if not row.cancelled:
                row.accept(token, group.context_length - int(batch.positions[index]) - 1)
            if not (row.done or row.cancelled):
                keep.append(index)
        decode.keep_rows(batch, keep)

    def _fail(self, group: _Group, exc: Exception) -> None:
        rows = list(group.batch.rows) if group.batch else []
        group.batch = None
        with self._wake:
            rows += list(group.waiting)
            group.waiting.clear()
        for row in rows:
            row.emit(exc)

    def _delete_retired(self, group: _Group) -> None:
        if not group.retired:
            return
        with self._wake:
            in_use = {row.adapter for row in group.waiting}
        in_use |= {row.adapter for row in (group.batch.rows if group.batch else [])}
        in_use |= {served.adapter_name for served in self._served.values()}
        for name in list(group.retired - in_use):
            if len(group.model.peft_config) > 1:
                if name == group.model.active_adapter:  # PEFT needs some other adapter active first
                    group.model.set_adapter(next(other for other in group.model.peft_config if other != name))
                group.model.delete_adapter(name)
            group.retired.discard(name)


def _stop_ids(model, tokenizer) -> set[int]:
    ids = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in configured if isinstance(configured, list) else [configured]:
        if value is not None:
            ids.add(int(value))
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    return ids
