"""The engine interface the HTTP layer talks to, and what goes in and out of it.

An engine turns a GenerationRequest into a stream of events: text deltas, then one Finished with the reason
and token counts. Two engines exist: LocalEngine (transformers in this process, batching concurrent requests,
local_engine.py) and ProxyEngine (any OpenAI-compatible server at a URL, proxy_engine.py). Both can swap one
model id's weights while serving (`load` / `unload`), which the promote step of the feedback loop uses.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol


@dataclass
class GenerationRequest:
    """One reply to write. prompt_ids come tokenized (engine.encode) so limits are checked before queueing."""

    model_id: str
    prompt_ids: list[int]
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # The proxy engine forwards the request as it came (messages or prompt) instead of token ids.
    messages: list[dict] | None = None
    prompt: str | None = None


@dataclass
class TextDelta:
    text: str


@dataclass
class Finished:
    finish_reason: str  # "stop" (EOS or a stop sequence) or "length" (max_tokens reached)
    prompt_tokens: int
    completion_tokens: int
    text: str  # the whole reply, stop sequence removed
    # The weights that answered, bound when the request was queued: a promotion during the request does not
    # change it, so the store records the version that really wrote the reply.
    model: LoadedModel | None = None


@dataclass(frozen=True)
class LoadedModel:
    """What answers for a model id: the run it came from, its base, and which adapter version."""

    model_id: str
    run_dir: Path | None
    base: str  # the base model path or name (the `parent` in /v1/models for adapters)
    adapter: Path | None  # the LoRA adapter directory, None for a full fine-tune or a remote model
    version: str  # a short hash of the weights, so stored requests say exactly which weights answered
    context_length: int | None = None


class Engine(Protocol):
    """What app.py needs from an engine."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def models(self) -> dict[str, LoadedModel]: ...

    def encode_chat(self, model_id: str, messages: list[dict]) -> list[int] | None:
        """Prompt token ids with the model's chat template, or None when the engine counts them itself."""

    def encode_text(self, model_id: str, text: str) -> list[int] | None: ...

    def generate(self, request: GenerationRequest) -> AsyncIterator[TextDelta | Finished]: ...

    async def load(self, model_id: str, run_dir: Path) -> LoadedModel:
        """Serve run_dir's weights under model_id from now on (replacing what answered before), atomically."""

    async def unload(self, model_id: str) -> None: ...
