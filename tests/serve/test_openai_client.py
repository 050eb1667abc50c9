"""The official openai client against a real `tuneloop serve` process: list, chat, stream, completions, feedback."""

from __future__ import annotations

import time

import httpx
import openai
import pytest
from serve_helpers import ServerProcess
from test_durability import check_nothing_acknowledged_is_lost, load_then_kill

KEY = "sk-test-0123456789abcdef"


@pytest.fixture(scope="module")
def server(adapter_runs, tmp_path_factory):
    root = tmp_path_factory.mktemp("client")
    keys = root / "keys.txt"
    keys.write_text(f"# test keys\n{KEY}\n")
    process = ServerProcess(server_args(adapter_runs, root), root / "server.log")
    process.store = root / "serve.db"
    yield process
    process.stop()


def server_args(adapter_runs, root) -> list[str]:
    return [str(adapter_runs["alpha"]), str(adapter_runs["beta"]), "--split", "bot=alpha:50,beta:50",
            "--store", str(root / "serve.db"), "--api-key-file", str(root / "keys.txt"), "--default-max-tokens", "8"]


@pytest.fixture(scope="module")
def client(server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=KEY, max_retries=0)


def test_models_list(client, tiny_model_dir):
    models = {m.id: m for m in client.models.list()}
    assert set(models) == {"alpha", "beta", "bot"}
    assert models["alpha"].model_extra["parent"] == str(tiny_model_dir)


def test_chat_plain_and_streamed(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Where is the head office?"}]
    raw = client.chat.completions.with_raw_response.create(model="alpha", messages=messages, max_tokens=8,
                                                           temperature=0, top_p=0.9, seed=3, user="ana")
    reply = raw.parse()
    assert reply.id.startswith("chatcmpl-") and raw.headers["x-request-id"] == reply.id
    assert reply.usage.completion_tokens >= 1 and reply.choices[0].message.role == "assistant"
    stream = client.chat.completions.create(model="alpha", messages=messages, max_tokens=8, temperature=0,
                                            stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == reply.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == reply.usage.completion_tokens
    assert len({c.id for c in chunks}) == 1


def test_completions_and_stop(client):
    completion = client.completions.create(model="beta", prompt="The head office", max_tokens=6, temperature=0,
                                           stop=["\n\n"])
    assert completion.id.startswith("cmpl-") and completion.choices[0].finish_reason in ("stop", "length")
    streamed = client.completions.create(model="beta", prompt="The head office", max_tokens=6, temperature=0,
                                         stop=["\n\n"], stream=True)
    assert "".join(c.choices[0].text for c in streamed if c.choices) == completion.choices[0].text


def test_feedback_through_the_client(client, server):
    reply = client.chat.completions.create(model="bot", messages=[{"role": "user", "content": "Hi"}], user="ben")
    created = client.post("/feedback", body={"id": reply.id, "rating": "up", "comment": "good"}, cast_to=object)
    assert created["request_id"] == reply.id and created["id"].startswith("feedback-")  # the README's call
    with pytest.raises(openai.NotFoundError) as missing:
        client.post("/feedback", body={"id": "chatcmpl-unknown", "rating": "down"}, cast_to=httpx.Response)
    assert "chatcmpl-unknown" in str(missing.value)


def test_errors_reach_the_client_in_openai_shape(client, server):
    with pytest.raises(openai.NotFoundError) as unknown:
        client.chat.completions.create(model="gamma", messages=[{"role": "user", "content": "Hi"}])
    assert "alpha" in unknown.value.message  # the message lists the models that exist
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="alpha", messages=[])
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.url + "/v1", api_key="wrong-key-0123456789", max_retries=0).models.list()
    assert httpx.get(server.url + "/v1/models").status_code == 401  # no key
    assert httpx.get(server.url + "/metrics").status_code == 401  # every route but /health needs the key
    assert httpx.get(server.url + "/health").status_code == 200
    log = server.log.read_text()
    assert "Traceback" not in log, log


def test_a_client_leaving_mid_stream_frees_its_slot(server):
    headers = {"authorization": f"Bearer {KEY}"}
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers=headers, timeout=30, json={
            "model": "alpha", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 200, "stream": True,
            "temperature": 1.0, "stop": []}) as response:
        next(response.iter_lines())  # the first event, then hang up
    deadline = time.monotonic() + 10
    while httpx.get(server.url + "/health").json()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert httpx.get(server.url + "/health").json()["in_flight"] == 0


def test_sqlite_kill9_under_load_then_restart_loses_nothing_acknowledged(server, adapter_runs):
    """Last in this module: it kills the module's server (kill -9 under load), then starts it again."""
    headers = {"authorization": f"Bearer {KEY}"}
    answered, rated, unfinished = load_then_kill(server, headers=headers)
    restarted = ServerProcess(server_args(adapter_runs, server.store.parent), server.log)
    try:  # the restarted server opens the store and takes feedback on replies given before the kill
        assert httpx.post(restarted.url + "/v1/feedback", headers=headers,
                          json={"id": answered[0], "rating": 5}).status_code == 201
    finally:
        restarted.stop()
    check_nothing_acknowledged_is_lost(f"sqlite:///{server.store}", answered, rated, unfinished)
