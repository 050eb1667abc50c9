"""The FastAPI app: thin routes over the router, the engine, the store and the metrics.

Routes: GET /health, GET /metrics, GET /v1/models, POST /v1/chat/completions, POST /v1/completions (both
also as SSE streams), POST /v1/feedback. Every error is OpenAI's error JSON with a message that says what to
change; bad input is a 4xx. A reply is written to the store before the client gets it (the 200 of a plain
request, the final chunk and [DONE] of a stream) and feedback before its 201.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.exceptions import HTTPException

from tuneloop.errors import TuneloopError
from tuneloop.serve import auth
from tuneloop.serve.admin import add_admin_routes
from tuneloop.serve.engine import Engine, Finished, GenerationRequest, TextDelta
from tuneloop.serve.metrics import ServeMetrics
from tuneloop.serve.promotions import DEFAULT_INTERVAL_S, apply_newest, follow_promotions
from tuneloop.serve.protocol import (
    APIError,
    AssistantMessage,
    ChatChoice,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChatCompletionResponse,
    ChunkChoice,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DeltaMessage,
    FeedbackRequest,
    ModelCard,
    ModelList,
    SamplingFields,
    Usage,
)
from tuneloop.serve.request_body import body_too_large, parse, read_json
from tuneloop.serve.routing import Router, hash_user
from tuneloop.serve.store import RETRY_AFTER_S, Store, StoreUnavailable, UnknownRequest, utcnow

log = logging.getLogger("tuneloop.serve")
VARIANT_HEADER = "x-tuneloop-variant"  # the model id that answered (the body's `model` is the name asked for)


@dataclass
class Limits:
    """What one request may ask for; each has a serve option of the same name."""

    max_prompt_tokens: int = 4096
    max_tokens: int = 2048  # the most a request may set max_tokens to
    default_max_tokens: int = 256  # when the request leaves max_tokens out
    max_body_bytes: int = 1_000_000
    max_concurrent: int = 64  # requests being answered or queued; more get a 429


@dataclass
class ServeState:
    engine: Engine
    router: Router
    store: Store | None
    limits: Limits
    key_hashes: list[bytes] = field(default_factory=list)
    metrics: ServeMetrics = field(default_factory=ServeMetrics)
    in_flight: int = 0
    # model id -> what answered before each promotion, newest last (for rollback)
    history: dict[str, list] = field(default_factory=dict)
    replica: str | None = None  # host:port, recorded with the promotions this replica takes
    promotion_interval: float = DEFAULT_INTERVAL_S  # seconds between checks of the store's promotions; 0: never
    promotions_seen: dict[str, int] = field(default_factory=dict)  # model id -> newest promotion row applied
    promotion_lock: asyncio.Lock = field(default_factory=asyncio.Lock)  # one promotion at a time per replica


def new_request_id(path: str) -> str:
    prefix = {"/v1/chat/completions": "chatcmpl", "/v1/completions": "cmpl"}.get(path, "req")
    return f"{prefix}-{uuid.uuid4().hex}"


class RequestGate:
    """ASGI middleware: the request id (x-request-id), API keys on every route but /health, the body limit."""

    def __init__(self, app, state: ServeState):
        self.app, self.state = app, state

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = new_request_id(scope["path"])
        scope.setdefault("state", {})["request_id"] = request_id
        headers = {key.decode().lower(): value.decode("latin-1") for key, value in scope["headers"]}

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        refusal = None
        if self.state.key_hashes and scope["path"] not in auth.OPEN_PATHS:
            if not auth.key_allowed(auth.bearer(headers.get("authorization")), self.state.key_hashes):
                refusal = APIError(401, "missing or wrong API key: send the header 'Authorization: Bearer KEY' "
                                   "with a key from the server's --api-key-file", code="invalid_api_key")
        length = headers.get("content-length", "")
        if refusal is None and length.isdigit() and int(length) > self.state.limits.max_body_bytes:
            refusal = body_too_large(self.state.limits.max_body_bytes)
        if refusal is not None:
            response = JSONResponse(refusal.body(), status_code=refusal.status)
            return await response(scope, receive, send_with_id)
        return await self.app(scope, receive, send_with_id)


def create_app(state: ServeState) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app):
        await state.engine.start()
        follower = None
        if state.store is not None and state.promotion_interval > 0:
            await apply_newest(state)  # a replica (re)started after a promotion serves the promoted weights
            follower = asyncio.create_task(follow_promotions(state, state.promotion_interval))
        try:
            yield
        finally:
            if follower is not None:
                follower.cancel()
            await state.engine.stop()
            if state.store is not None:
                state.store.close()

    app = FastAPI(title="tuneloop serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
    app.state.serve = state
    app.add_middleware(RequestGate, state=state)

    @app.exception_handler(APIError)
    async def api_error(_request, exc: APIError):
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request, exc: RequestValidationError):
        first = exc.errors()[0]
        return JSONResponse(APIError(400, f"{'.'.join(map(str, first['loc']))}: {first['msg']}").body(), 400)

    @app.exception_handler(HTTPException)
    async def http_error(request, exc: HTTPException):
        message = (f"no route {request.method} {request.url.path}; the API lives under /v1 (/v1/models, "
                   "/v1/chat/completions, /v1/completions, /v1/feedback)" if exc.status_code in (404, 405)
                   else str(exc.detail))
        return JSONResponse(APIError(exc.status_code, message).body(), exc.status_code)

    @app.exception_handler(Exception)
    async def server_error(_request, exc: Exception):
        log.error("internal error: %s: %s", type(exc).__name__, exc, exc_info=not isinstance(exc, TuneloopError))
        return JSONResponse(APIError(500, f"internal error: {exc}").body(), 500)

    add_admin_routes(app, state)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": sorted(state.router.names()), "in_flight": state.in_flight}

    @app.get("/metrics")
    async def metrics():
        return Response(state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def list_models():
        return ModelList(data=model_cards(state)).model_dump()

    @app.get("/v1/models/{model_id:path}")
    async def get_model(model_id: str):
        for card in model_cards(state):
            if card.id == model_id:
                return card.model_dump()
        raise APIError(404, f"model {model_id!r} does not exist; GET /v1/models lists the served ones", "model",
                       "model_not_found")

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request):
        return await answer(state, request, ChatCompletionRequest, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request):
        return await answer(state, request, CompletionRequest, "completion")

    @app.post("/v1/feedback", status_code=201)
    async def feedback(request: Request):
        body = parse(FeedbackRequest, await read_json(request, state.limits.max_body_bytes))
        return await record_feedback(state, body)

    return app


def model_cards(state: ServeState) -> list[ModelCard]:
    loaded = state.engine.models()
    cards = []
    for name in state.router.names():
        info = loaded.get(name)
        if info is None:  # a --split alias
            variants = ", ".join(model_id for model_id, _ in state.router.splits.get(name, []))
            cards.append(ModelCard(id=name, created=int(time.time()), root=f"split: {variants}"))
            continue
        created = int(info.run_dir.stat().st_mtime) if info.run_dir and info.run_dir.exists() else int(time.time())
        cards.append(ModelCard(id=name, created=created, parent=info.base if info.adapter else None,
                               root=str(info.run_dir) if info.run_dir else None))
    return cards


@dataclass
class _Call:
    """One generation request on its way through: what was asked, who answers, what to store."""

    id: str
    kind: str
    body: SamplingFields
    created_at: object
    started: float
    model_id: str | None = None
    messages: list[dict] | None = None
    prompt: str | None = None
    ttft: float | None = None
    max_tokens: int | None = None  # as applied (the request's, or the server's default)


async def answer(state: ServeState, request: Request, model, kind: str):
    call = _Call(request.state.request_id, kind, None, utcnow(), time.perf_counter())
    try:
        call.body = parse(model, await read_json(request, state.limits.max_body_bytes))
        generation = prepare(state, call)
    except APIError as exc:
        await refuse(state, call, exc)
        raise
    state.in_flight += 1
    if call.body.stream:
        return CountedStream(state, stream(state, call, generation), media_type="text/event-stream",
                             headers={"cache-control": "no-cache", VARIANT_HEADER: call.model_id})
    try:
        finished = None
        async with aclosing(state.engine.generate(generation)) as events:  # a cancelled request frees its row
            async for event in events:
                if call.ttft is None:
                    call.ttft = time.perf_counter() - call.started
                if isinstance(event, Finished):
                    finished = event
        await store_answer(state, call, finished)
    except StoreUnavailable as exc:  # not stored, so not answered: the client retries, nothing is lost
        failure = store_unavailable(exc)
        state.metrics.failed(call.body.model, call.model_id, failure.status)
        raise failure from None
    except TuneloopError as exc:  # the engine failed (an upstream down, out of memory): a 500 that says so
        failure = APIError(500, str(exc), code="engine_error")
        await refuse(state, call, failure)
        raise failure from None
    finally:
        state.in_flight -= 1
    return JSONResponse(response_body(call, finished), headers={VARIANT_HEADER: call.model_id})


def prepare(state: ServeState, call: _Call) -> GenerationRequest:
    """Route the request and check it against the limits; raises APIError with what to change."""
    body, limits = call.body, state.limits
    call.model_id = state.router.route(body.model, body.user)
    if call.model_id is None or call.model_id not in state.engine.models():
        raise APIError(404, f"model {body.model!r} does not exist; use one of {sorted(state.router.names())} "
                       "(GET /v1/models)", "model", "model_not_found")
    if state.in_flight >= limits.max_concurrent:
        raise APIError(429, f"the server is answering its limit of {limits.max_concurrent} concurrent requests "
                       "(--max-concurrent); retry shortly with backoff", code="too_many_requests")
    max_tokens = call.max_tokens = body.max_tokens or min(limits.default_max_tokens, limits.max_tokens)
    if max_tokens > limits.max_tokens:
        raise APIError(400, f"max_tokens is {max_tokens}, above this server's limit of {limits.max_tokens} "
                       "(--max-tokens); ask for fewer", "max_tokens")
    if call.kind == "chat":
        call.messages = [{"role": "system" if m.role == "developer" else m.role, "content": m.text()}
                         for m in body.messages]
        prompt_ids = state.engine.encode_chat(call.model_id, call.messages)
    else:
        call.prompt = body.prompt
        prompt_ids = state.engine.encode_text(call.model_id, body.prompt)
    if prompt_ids is not None:
        field_name = "messages" if call.kind == "chat" else "prompt"
        if not prompt_ids:
            raise APIError(400, f"{field_name}: the prompt is empty; send some text", field_name)
        if len(prompt_ids) > limits.max_prompt_tokens:
            raise APIError(400, f"{field_name}: the prompt has {len(prompt_ids)} tokens, more than this server's "
                           f"limit of {limits.max_prompt_tokens} (--max-prompt-tokens); shorten it", field_name)
        context = state.engine.models()[call.model_id].context_length
        if context and len(prompt_ids) + max_tokens > context:
            raise APIError(400, f"the prompt ({len(prompt_ids)} tokens) plus max_tokens ({max_tokens}) is more "
                           f"than the model's context of {context} tokens; lower max_tokens or shorten the prompt",
                           "max_tokens")
    return GenerationRequest(call.model_id, prompt_ids or [], max_tokens, body.temperature, body.top_p,
                             list(body.stop or []), body.seed, call.messages, call.prompt)


class CountedStream(StreamingResponse):
    """A stream that frees its concurrency slot and its engine row however it ends: done, failed, or the client
    gone (even before the first byte), by closing the event generator instead of leaving that to the GC."""

    def __init__(self, state: ServeState, events, **kwargs):
        super().__init__(events, **kwargs)
        self.state, self.events = state, events

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.events.aclose()
            self.state.in_flight -= 1


async def stream(state: ServeState, call: _Call, generation: GenerationRequest):
    """Server-sent events: a role chunk, text deltas, then (once stored) the finish chunk, usage and [DONE]."""
    if call.kind == "chat":
        yield sse(chunk(call, DeltaMessage(role="assistant", content="")))
    finished = None
    try:
        async with aclosing(state.engine.generate(generation)) as events:  # a client that leaves frees its row
            async for event in events:
                if call.ttft is None:
                    call.ttft = time.perf_counter() - call.started
                if isinstance(event, TextDelta) and event.text:
                    yield sse(chunk(call, DeltaMessage(content=event.text)) if call.kind == "chat"
                              else completion_chunk(call, event.text, None))
                elif isinstance(event, Finished):
                    finished = event
        await store_answer(state, call, finished)
    except Exception as exc:  # the status line is sent already: end the stream with an error, never [DONE]
        log.error("stream %s failed: %s: %s", call.id, type(exc).__name__, exc)
        error = (store_unavailable(exc) if isinstance(exc, StoreUnavailable)
                 else APIError(500, f"the reply could not be finished or stored: {exc}"))
        yield sse(error.body())
        return
    last = (chunk(call, DeltaMessage(), finished.finish_reason) if call.kind == "chat"
            else completion_chunk(call, "", finished.finish_reason))
    yield sse(last)
    if call.body.include_usage():
        usage = usage_of(finished)
        yield sse(ChatCompletionChunk(id=call.id, model=call.body.model, choices=[], usage=usage).model_dump()
                  if call.kind == "chat" else
                  CompletionResponse(id=call.id, model=call.body.model, choices=[], usage=usage).model_dump())
    yield "data: [DONE]\n\n"


def sse(payload: dict) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def chunk(call: _Call, delta: DeltaMessage, finish_reason: str | None = None) -> dict:
    return ChatCompletionChunk(id=call.id, model=call.body.model,
                               choices=[ChunkChoice(delta=delta, finish_reason=finish_reason)]).model_dump(
        exclude_none=False)


def completion_chunk(call: _Call, text: str, finish_reason: str | None) -> dict:
    return CompletionResponse(id=call.id, model=call.body.model,
                              choices=[CompletionChoice(text=text, finish_reason=finish_reason)]).model_dump()


def usage_of(finished: Finished) -> Usage:
    return Usage(prompt_tokens=finished.prompt_tokens, completion_tokens=finished.completion_tokens,
                 total_tokens=finished.prompt_tokens + finished.completion_tokens)


def response_body(call: _Call, finished: Finished) -> dict:
    if call.kind == "chat":
        return ChatCompletionResponse(
            id=call.id, model=call.body.model, usage=usage_of(finished),
            choices=[ChatChoice(message=AssistantMessage(content=finished.text),
                                finish_reason=finished.finish_reason)]).model_dump()
    return CompletionResponse(id=call.id, model=call.body.model, usage=usage_of(finished),
                              choices=[CompletionChoice(text=finished.text,
                                                        finish_reason=finished.finish_reason)]).model_dump()


async def store_answer(state: ServeState, call: _Call, finished: Finished) -> None:
    """Count the reply in the metrics and commit it to the store, before the client hears of it."""
    latency = time.perf_counter() - call.started
    state.metrics.answered(call.body.model, call.model_id, latency, call.ttft, finished.prompt_tokens,
                           finished.completion_tokens)
    if state.store is None:
        return
    info = finished.model or state.engine.models().get(call.model_id)
    body = call.body
    await asyncio.to_thread(
        state.store.record_request, id=call.id, created_at=call.created_at, finished_at=utcnow(), endpoint=call.kind,
        model=body.model, variant=call.model_id, run_dir=str(info.run_dir) if info and info.run_dir else None,
        base_model=info.base if info else None, adapter=str(info.adapter) if info and info.adapter else None,
        adapter_version=info.version if info else None, user_hash=hash_user(body.user), messages=call.messages,
        prompt=call.prompt, params={"temperature": body.temperature, "top_p": body.top_p,
                                    "max_tokens": call.max_tokens, "stop": body.stop, "seed": body.seed,
                                    "stream": body.stream},
        reply=finished.text, finish_reason=finished.finish_reason, prompt_tokens=finished.prompt_tokens,
        completion_tokens=finished.completion_tokens, latency_s=latency, ttft_s=call.ttft, status=200)


def store_unavailable(exc: StoreUnavailable) -> APIError:
    return APIError(503, f"{exc}; retry in {RETRY_AFTER_S} s", code="store_unavailable",
                    headers={"Retry-After": str(RETRY_AFTER_S)})


async def refuse(state: ServeState, call: _Call, exc: APIError) -> None:
    """Count a refused request and keep it in the store (status and message), so monitoring sees errors."""
    model = call.body.model if call.body is not None else None
    state.metrics.failed(model, call.model_id, exc.status)
    if state.store is None:
        return
    try:
        await asyncio.to_thread(state.store.record_request, id=call.id, created_at=call.created_at,
                                finished_at=utcnow(), endpoint=call.kind, model=model, variant=call.model_id,
                                user_hash=hash_user(call.body.user) if call.body is not None else None,
                                latency_s=time.perf_counter() - call.started, status=exc.status,
                                error=exc.message[:500])
    except Exception as store_exc:  # the refusal itself must still reach the client
        log.error("could not store a refused request: %s", store_exc)


async def record_feedback(state: ServeState, feedback: FeedbackRequest) -> JSONResponse:
    if state.store is None:
        raise APIError(400, "this server runs with --no-store, so feedback cannot be kept; restart it without "
                       "--no-store", code="store_disabled")
    pairwise = feedback.id_a is not None
    first, second = (feedback.id_a, feedback.id_b) if pairwise else (feedback.id, None)
    try:
        feedback_id = await asyncio.to_thread(
            state.store.record_feedback, "pairwise" if pairwise else "rating", first, second,
            preferred_request_id=feedback.preferred_id() if pairwise else None,
            rating=None if feedback.rating is None else str(feedback.rating), score=feedback.score(),
            correction=feedback.correction, comment=feedback.comment, user_hash=hash_user(feedback.user))
    except StoreUnavailable as exc:
        raise store_unavailable(exc) from None
    except UnknownRequest as exc:
        missing = str(exc)
        param = "id" if not pairwise else ("id_a" if missing == feedback.id_a else "id_b")
        raise APIError(404, f"{param}: no response with id {missing!r} is in the store; send the 'id' of a "
                       "response this server gave (chatcmpl-... or cmpl-...)", param, "response_not_found") from None
    return JSONResponse({"id": f"feedback-{feedback_id}", "object": "feedback", "request_id": first,
                         "created": int(time.time())}, status_code=201)
