"""The proxy engine: tuneloop's routing, auth, store and metrics in front of any OpenAI-compatible server.

`tuneloop serve --engine URL` forwards each request, streamed, to URL/v1/chat/completions (or /v1/completions)
under the answering model id, so the upstream must know that id: vLLM started with
`--enable-lora --lora-modules ID=RUN/adapter`, llama.cpp's server, or another tuneloop server. Token counts
come from the upstream's usage report; prompt-token limits are the upstream's to enforce.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import httpx

from tuneloop.errors import ModelError
from tuneloop.serve.engine import Finished, GenerationRequest, LoadedModel, TextDelta


class ProxyEngine:
    def __init__(self, url: str, models: dict[str, LoadedModel] | None = None, api_key: str | None = None,
                 transport: httpx.AsyncBaseTransport | None = None, timeout: float = 600.0):
        self.url = url.rstrip("/").removesuffix("/v1")
        self._models = dict(models or {})
        self._headers = {"authorization": f"Bearer {api_key}"} if api_key else {}
        self._transport = transport  # tests pass an ASGI transport to a second in-process server
        self._timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx.AsyncClient(base_url=self.url, headers=self._headers, transport=self._transport,
                                         timeout=httpx.Timeout(self._timeout, connect=10.0))
        if not self._models:  # serve whatever the upstream serves
            try:
                listing = (await self._client.get("/v1/models")).raise_for_status().json()
            except (httpx.HTTPError, ValueError) as exc:
                raise ModelError(f"--engine {self.url}: could not list its models ({exc}); is it an "
                                 "OpenAI-compatible server, and running?") from None
            for card in listing.get("data", []):
                self._models[card["id"]] = LoadedModel(card["id"], None, card.get("parent") or card["id"], None,
                                                       "remote")

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.aclose()

    def models(self) -> dict[str, LoadedModel]:
        return dict(self._models)

    def encode_chat(self, model_id: str, messages: list[dict]) -> None:
        return None

    def encode_text(self, model_id: str, text: str) -> None:
        return None

    async def load(self, model_id: str, run_dir: Path) -> LoadedModel:
        """Record that model_id now answers from run_dir; loading the weights is the upstream's job."""
        from tuneloop.serve.local_engine import weights_version
        from tuneloop.serve.run_weights import read_run

        weights = read_run(run_dir)
        source = weights.adapter or weights.full_model
        self._models[model_id] = LoadedModel(model_id, run_dir, weights.base, weights.adapter,
                                             weights_version(source))
        return self._models[model_id]

    async def unload(self, model_id: str) -> None:
        self._models.pop(model_id, None)

    async def generate(self, request: GenerationRequest) -> AsyncIterator[TextDelta | Finished]:
        chat = request.messages is not None
        payload = {"model": request.model_id, "max_tokens": request.max_tokens, "temperature": request.temperature,
                   "top_p": request.top_p, "stream": True, "stream_options": {"include_usage": True}}
        if request.stop:
            payload["stop"] = request.stop
        if request.seed is not None:
            payload["seed"] = request.seed
        payload["messages" if chat else "prompt"] = request.messages if chat else request.prompt
        bound = self._models.get(request.model_id)  # the weights that answer, as the store will record them
        parts: list[str] = []
        reason, usage = "stop", {}
        try:
            async with self._client.stream("POST", "/v1/chat/completions" if chat else "/v1/completions",
                                           json=payload) as response:
                if response.status_code != 200:
                    detail = (await response.aread()).decode(errors="replace")[:500]
                    raise ModelError(f"the engine at {self.url} answered {response.status_code}: {detail}")
                async for line in response.aiter_lines():
                    if not line.startswith("data:"):
                        continue
                    data = line[5:].strip()
                    if data == "[DONE]":
                        break
                    event = json.loads(data)
                    if "error" in event:
                        raise ModelError(f"the engine at {self.url} failed: {event['error']}")
                    usage = event.get("usage") or usage
                    for choice in event.get("choices") or []:
                        text = (choice.get("delta") or {}).get("content") if chat else choice.get("text")
                        if text:
                            parts.append(text)
                            yield TextDelta(text)
                        reason = choice.get("finish_reason") or reason
        except httpx.HTTPError as exc:
            raise ModelError(f"the engine at {self.url} could not be reached: {exc}") from None
        yield Finished(reason, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0),
                       "".join(parts), bound)
