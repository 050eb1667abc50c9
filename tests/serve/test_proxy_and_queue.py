"""--engine URL in front of a second tuneloop server, and the bounded queue that answers 429 beyond its limit."""

from __future__ import annotations

import asyncio
import json

import httpx
from fastapi.testclient import TestClient

from tuneloop.serve.app import Limits, create_app
from tuneloop.serve.proxy_engine import ProxyEngine
from tuneloop.serve.server import ServeOptions, build_state
from tuneloop.serve.store import read_tables


def test_proxy_engine_forwards_to_another_tuneloop_server(adapter_runs, tmp_path):
    upstream = build_state(ServeOptions(run_dirs=[adapter_runs["alpha"], adapter_runs["beta"]], no_store=True),
                           say=lambda _m: None)
    store = tmp_path / "proxy.db"
    proxy = build_state(ServeOptions(run_dirs=[adapter_runs["alpha"], adapter_runs["beta"]], store=str(store),
                                     splits=["bot=alpha:1,beta:1"], engine_url="http://upstream"), say=lambda _m: None)
    proxy.engine._transport = httpx.ASGITransport(app=create_app(upstream))  # the second server, in process
    asyncio.run(upstream.engine.start())
    try:
        with TestClient(create_app(proxy)) as client:
            request = {"model": "beta", "messages": [{"role": "user", "content": "Where is the head office?"}],
                       "max_tokens": 8, "temperature": 0}
            direct = TestClient(create_app(upstream)).post("/v1/chat/completions", json=request).json()
            proxied = client.post("/v1/chat/completions", json=request)
            assert proxied.status_code == 200
            body = proxied.json()
            assert body["choices"][0]["message"]["content"] == direct["choices"][0]["message"]["content"]
            assert body["usage"] == direct["usage"]
            assert body["id"].startswith("chatcmpl-") and body["id"] != direct["id"]
            with client.stream("POST", "/v1/completions", json={"model": "bot", "prompt": "The head office",
                                                                "max_tokens": 6, "temperature": 0, "stream": True,
                                                                "user": "ana"}) as streamed:
                lines = [line[6:] for line in streamed.iter_lines() if line.startswith("data: ")]
            assert lines[-1] == "[DONE]" and json.loads(lines[0])["object"] == "text_completion"
            assert client.post("/v1/feedback", json={"id": body["id"], "rating": "up"}).status_code == 201
            models = {m["id"]: m for m in client.get("/v1/models").json()["data"]}
            assert models["alpha"]["parent"] == upstream.engine.models()["alpha"].base
        # Without run directories the proxy serves what the upstream lists.
        bare = ProxyEngine("http://upstream", transport=httpx.ASGITransport(app=create_app(upstream)))
        asyncio.run(bare.start())
        assert set(bare.models()) == {"alpha", "beta"}
        asyncio.run(bare.stop())
    finally:
        asyncio.run(upstream.engine.stop())
    requests, feedback = read_tables(f"sqlite:///{store}")
    row = next(r for r in requests if r["id"] == body["id"])
    assert row["variant"] == "beta" and row["adapter_version"] == upstream.engine.models()["beta"].version
    assert row["completion_tokens"] == direct["usage"]["completion_tokens"] and len(feedback) == 1


def test_requests_beyond_the_concurrency_limit_get_429(adapter_runs):
    state = build_state(ServeOptions(run_dirs=[adapter_runs["alpha"]], no_store=True,
                                     limits=Limits(max_concurrent=3)), say=lambda _m: None)
    app = create_app(state)

    async def burst():
        await state.engine.start()
        try:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
                return await asyncio.gather(*(client.post("/v1/chat/completions", json={
                    "model": "alpha", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 24,
                    "temperature": 0}) for _ in range(10)))
        finally:
            await state.engine.stop()

    responses = asyncio.run(burst())
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(200) >= 3 and statuses.count(429) >= 1, statuses
    refusal = next(r for r in responses if r.status_code == 429).json()["error"]
    assert "--max-concurrent" in refusal["message"] and refusal["type"] == "rate_limit_error"
    assert state.in_flight == 0
