"""Admin routes: promote a run to a model id while serving, and roll the last promotion back.

POST /admin/promote {"model": ID, "run_dir": PATH} loads the run's weights beside the ones answering now and
routes new requests for ID to them; requests already queued or decoding finish on the old weights (the
engine binds the weights when a request is queued, and deletes old adapters once their last row is done).
POST /admin/rollback {"model": ID} does the same with the weights ID had before its last promotion.
Both answer {"model", "version", "previous_version", "run_dir"}, and both are recorded in the store, whose newest
row every replica on that store follows (tuneloop.serve.promotions).

Guarded like every route by the API keys; a server without keys takes admin calls from loopback clients
only, so `--insecure-no-auth` on a public address never opens them. A run directory that does not exist or
holds no trained weights is a 400 that says so, never a 200 (the opposite of vLLM's #18372).
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict

from tuneloop.errors import TuneloopError
from tuneloop.serve import auth
from tuneloop.serve.protocol import APIError
from tuneloop.serve.request_body import parse, read_json
from tuneloop.serve.store import RETRY_AFTER_S, StoreUnavailable


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str
    run_dir: str


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str


def add_admin_routes(app: FastAPI, state) -> None:
    @app.post("/admin/promote")
    async def promote(request: Request):
        _allowed(state, request)
        body = parse(PromoteRequest, await read_json(request, state.limits.max_body_bytes))
        current = _served(state, body.model)
        run_dir = Path(body.run_dir)
        if not run_dir.is_dir():
            raise APIError(400, f"run_dir: {run_dir} is not a directory on the server; give the path of a trained "
                           "run as the server sees it", "run_dir")
        async with state.promotion_lock:
            current = _served(state, body.model)
            loaded = await _load(state, body.model, run_dir)
            await _record(state, "promote", loaded, current)
            state.history.setdefault(body.model, []).append(current)
        return _answer(loaded, current)

    @app.post("/admin/rollback")
    async def rollback(request: Request):
        _allowed(state, request)
        body = parse(RollbackRequest, await read_json(request, state.limits.max_body_bytes))
        current = _served(state, body.model)
        history = state.history.get(body.model) or []
        if not history:
            raise APIError(409, f"model {body.model!r} has not been promoted since the server started, so there "
                           "is nothing to roll back to", "model", "nothing_to_roll_back")
        previous = history[-1]
        if previous.run_dir is None:
            raise APIError(409, f"model {body.model!r}: the previous weights came from no run directory",
                           "model")
        async with state.promotion_lock:
            loaded = await _load(state, body.model, previous.run_dir)
            await _record(state, "rollback", loaded, current)
            history.pop()
        return _answer(loaded, current)


def _allowed(state, request: Request) -> None:
    if state.key_hashes:  # the request gate already checked the key
        return
    client = request.client.host if request.client else ""
    if not auth.is_loopback(client):
        raise APIError(403, "admin routes need API keys when called from another host: restart the server with "
                       "--api-key-file", code="admin_needs_keys")


def _served(state, model: str):
    found = state.engine.models().get(model)
    if found is None:
        aliases = sorted(set(state.router.names()) - set(state.engine.models()))
        hint = f"; {model!r} is an A/B alias: promote one of its variants" if model in aliases else ""
        raise APIError(404, f"model {model!r} is not served here{hint}; served model ids: "
                       f"{sorted(state.engine.models())}", "model", "model_not_found")
    return found


async def _load(state, model: str, run_dir: Path):
    try:
        return await state.engine.load(model, run_dir)
    except TuneloopError as exc:
        raise APIError(400, f"run_dir: {exc}", "run_dir") from None


async def _record(state, action: str, loaded, previous) -> None:
    """Record the promotion in the store for the other replicas; undo it here when the store does not take it."""
    if state.store is None:
        return
    try:
        row = await asyncio.to_thread(state.store.record_promotion, loaded.model_id, action, str(loaded.run_dir),
                                      loaded.version, previous.version, state.replica)
    except StoreUnavailable as exc:
        if previous.run_dir is not None:
            await state.engine.load(loaded.model_id, previous.run_dir)
        raise APIError(503, f"{exc}: the {action} is undone on this replica too, so every replica still serves "
                       f"weights {previous.version}; retry in {RETRY_AFTER_S} s", code="store_unavailable",
                       headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    state.promotions_seen[loaded.model_id] = row


def _answer(loaded, previous) -> dict:
    return {"model": loaded.model_id, "version": loaded.version, "previous_version": previous.version,
            "run_dir": str(loaded.run_dir) if loaded.run_dir else None}
