"""The app in process (FastAPI TestClient): routes, storage, feedback, limits, errors, auth and metrics."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select
from sqlalchemy.orm import Session

from tuneloop.serve.app import Limits, create_app
from tuneloop.serve.server import ServeOptions, build_state
from tuneloop.serve.store import FeedbackRow, RequestRow


@pytest.fixture(scope="module")
def served(adapter_runs, tmp_path_factory):
    store = tmp_path_factory.mktemp("store") / "serve.db"
    options = ServeOptions(run_dirs=[adapter_runs["alpha"], adapter_runs["beta"]], splits=["bot=alpha:50,beta:50"],
                           store=str(store), limits=Limits(max_prompt_tokens=200, max_tokens=64,
                                                           default_max_tokens=8, max_body_bytes=20_000))
    state = build_state(options, say=lambda _m: None)
    with TestClient(create_app(state)) as client:
        yield client, state


def chat(client, model="alpha", **fields):
    body = {"model": model, "messages": [{"role": "user", "content": "When do the stores open?"}],
            "max_tokens": 6, "temperature": 0, **fields}
    return client.post("/v1/chat/completions", json=body)


def stored(state, request_id):
    with Session(state.store.engine) as session:
        return session.get(RequestRow, request_id)


def test_models_list_adapters_with_their_base(served, tiny_model_dir):
    client, _ = served
    cards = {card["id"]: card for card in client.get("/v1/models").json()["data"]}
    assert set(cards) == {"alpha", "beta", "bot"}
    assert cards["alpha"]["parent"] == str(tiny_model_dir)
    assert client.get("/v1/models/beta").json()["id"] == "beta"


def test_chat_reply_is_stored_with_model_run_and_adapter_version(served, adapter_runs):
    client, state = served
    response = chat(client)
    assert response.status_code == 200
    body = response.json()
    assert body["id"].startswith("chatcmpl-") and response.headers["x-request-id"] == body["id"]
    assert body["usage"]["completion_tokens"] >= 1
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    row = stored(state, body["id"])
    assert row.variant == "alpha" and row.model == "alpha" and row.status == 200
    assert row.run_dir == str(adapter_runs["alpha"]) and len(row.adapter_version) == 12
    assert row.reply == body["choices"][0]["message"]["content"]
    assert row.messages == [{"role": "user", "content": "When do the stores open?"}]
    assert row.prompt_tokens == body["usage"]["prompt_tokens"] and row.latency_s > 0


def test_greedy_replies_repeat_and_seeded_sampling_repeats(served):
    client, _ = served
    first, second = (chat(client, max_tokens=8).json()["choices"][0]["message"]["content"] for _ in range(2))
    assert first == second
    sampled = [chat(client, max_tokens=8, temperature=1.0, seed=7).json()["choices"][0]["message"]["content"]
               for _ in range(2)]
    assert sampled[0] == sampled[1]


def test_stream_sends_deltas_then_done_and_matches_the_plain_reply(served):
    client, state = served
    plain = chat(client, max_tokens=8).json()["choices"][0]["message"]["content"]
    with client.stream("POST", "/v1/chat/completions", json={
            "model": "alpha", "messages": [{"role": "user", "content": "When do the stores open?"}],
            "max_tokens": 8, "temperature": 0, "stream": True, "stream_options": {"include_usage": True}}) as response:
        assert response.status_code == 200
        lines = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    events = [json.loads(line) for line in lines[:-1]]
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"])
    assert text == plain
    assert events[-1]["usage"]["completion_tokens"] >= 1
    assert stored(state, events[0]["id"]).reply == plain


def test_completions_and_stop_sequence(served):
    client, _ = served
    body = client.post("/v1/completions", json={"model": "beta", "prompt": "The warranty", "max_tokens": 10,
                                                "temperature": 0}).json()
    assert body["id"].startswith("cmpl-") and body["object"] == "text_completion"
    text = body["choices"][0]["text"]
    if len(text) > 2:  # stop at the reply's second character: the reply must end before it
        cut = client.post("/v1/completions", json={"model": "beta", "prompt": "The warranty", "max_tokens": 10,
                                                   "temperature": 0, "stop": [text[1:3]]}).json()
        assert cut["choices"][0]["text"] == text[: text.index(text[1:3])]
        assert cut["choices"][0]["finish_reason"] == "stop"


def test_feedback_rating_pairwise_and_unknown_id(served):
    client, state = served
    first, second = chat(client).json()["id"], chat(client, model="beta").json()["id"]
    response = client.post("/v1/feedback", json={"id": first, "rating": "down", "correction": "At 7:30.",
                                                 "comment": "mail me at ana@example.com"})
    assert response.status_code == 201
    assert client.post("/v1/feedback", json={"id": first, "rating": 4}).status_code == 201
    assert client.post("/v1/feedback", json={"id_a": first, "id_b": second, "preferred": "b"}).status_code == 201
    missing = client.post("/v1/feedback", json={"id": "chatcmpl-nope", "rating": "up"})
    assert missing.status_code == 404 and "chatcmpl-nope" in missing.json()["error"]["message"]
    assert client.post("/v1/feedback", json={"id_a": first, "id_b": "x", "preferred": "a"}).status_code == 404
    assert client.post("/v1/feedback", json={"id": first, "rating": 9}).status_code == 400
    with Session(state.store.engine) as session:
        rows = session.scalars(select(FeedbackRow).where(FeedbackRow.request_id == first)).all()
    kinds = sorted((r.kind, r.rating, r.score) for r in rows)
    assert kinds == [("pairwise", None, None), ("rating", "4", 0.75), ("rating", "down", 0.0)]
    rating = next(r for r in rows if r.rating == "down")
    assert rating.comment == "mail me at [EMAIL]" and rating.correction == "At 7:30."
    assert next(r for r in rows if r.kind == "pairwise").preferred_request_id == second


def test_pii_is_redacted_before_storage(served):
    client, state = served
    response = chat(client, messages=[{"role": "user", "content": "I am ana@example.com, call +44 20 7946 0958"}])
    row = stored(state, response.json()["id"])
    assert row.messages[0]["content"] == "I am [EMAIL], call [PHONE]"
    assert row.pii["email"] == 1 and row.redacted


@pytest.mark.parametrize(("payload", "status", "param"), [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    ({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}, 404, "model"),
    ({"model": "alpha", "messages": []}, 400, "messages"),
    ({"model": "alpha", "messages": "hello"}, 400, "messages"),
    ({"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}, 400, "max_tokens"),
    ({"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "temperature": 5}, 400, "temperature"),
    ({"model": "alpha", "messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages.0.role"),
    ({"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1000}, 400, "max_tokens"),
    ({"model": "alpha", "messages": [{"role": "user", "content": "hi " * 300}]}, 400, "messages"),
    ({"model": "alpha", "messages": [{"role": "user", "content": "hi"}], "n": 3}, 400, "n"),
    ({"messages": [{"role": "user", "content": "hi"}]}, 400, "model"),
])
def test_bad_input_is_a_4xx_in_openai_shape(served, payload, status, param, caplog):
    client, _ = served
    if isinstance(payload, bytes):
        response = client.post("/v1/chat/completions", content=payload, headers={"content-type": "application/json"})
    else:
        response = client.post("/v1/chat/completions", json=payload)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and error["type"]
    assert "Traceback" not in caplog.text


def test_body_limit_and_unknown_route(served):
    client, _ = served
    big = client.post("/v1/chat/completions", json={"model": "alpha", "messages": [
        {"role": "user", "content": "x" * 30_000}]})
    assert big.status_code == 413 and "--max-body-bytes" in big.json()["error"]["message"]
    assert client.get("/v1/nothing").status_code == 404
    assert client.get("/v1/nothing").json()["error"]["message"].startswith("no route")


def test_metrics_parse_with_prometheus_parser(served):
    client, _ = served
    chat(client, model="bot", user="metrics-user")
    families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    for name in ("tuneloop_requests", "tuneloop_request_errors", "tuneloop_request_latency_seconds",
                 "tuneloop_time_to_first_token_seconds", "tuneloop_prompt_tokens", "tuneloop_generation_tokens"):
        assert name in families, name
    requests = {(s.labels["model"], s.labels["variant"]): s.value for s in families["tuneloop_requests"].samples
                if s.name == "tuneloop_requests_total"}
    assert requests[("alpha", "alpha")] >= 1
    assert any(model == "bot" and variant in ("alpha", "beta") for model, variant in requests)
    errors = [s for s in families["tuneloop_request_errors"].samples if s.name.endswith("_total")]
    assert any(s.labels["status"] == "404" for s in errors)


def test_split_records_the_sticky_variant(served):
    client, state = served
    for user in ("u1", "u2", "u3", "u4"):
        responses = [chat(client, model="bot", user=user) for _ in range(2)]
        variants = {stored(state, r.json()["id"]).variant for r in responses}
        assert variants == {state.router.route("bot", user)} == {r.headers["x-tuneloop-variant"] for r in responses}
        assert all(r.json()["model"] == "bot" for r in responses)
