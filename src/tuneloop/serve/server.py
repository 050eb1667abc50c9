"""Build a server from `tuneloop serve`'s options (engine, router, store, keys) and run it with uvicorn."""

from __future__ import annotations

import asyncio
import logging
import socket
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.errors import ConfigError
from tuneloop.serve import auth
from tuneloop.serve.app import Limits, ServeState, create_app
from tuneloop.serve.promotions import DEFAULT_INTERVAL_S
from tuneloop.serve.routing import Router, plan_models
from tuneloop.serve.run_weights import read_run
from tuneloop.serve.store import Store, store_url


@dataclass
class ServeOptions:
    run_dirs: list[Path]
    names: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 8000
    api_key_file: Path | None = None
    insecure_no_auth: bool = False
    store: str | None = None
    no_store: bool = False
    store_raw: bool = False
    engine_url: str | None = None
    engine_api_key: str | None = None
    device: str | None = None
    dtype: str | None = None
    max_batch_size: int = 32
    limits: Limits = field(default_factory=Limits)
    follow_promotions: float = DEFAULT_INTERVAL_S  # seconds between checks of the store's promotions; 0: never


def build_state(options: ServeOptions, say=print) -> ServeState:
    keys = auth.read_key_file(options.api_key_file) if options.api_key_file else []
    auth.check_binding(options.host, bool(keys), options.insecure_no_auth)
    if not (options.run_dirs or options.names or options.splits or options.engine_url):
        raise ConfigError("give at least one run directory to serve (tuneloop serve RUN_DIR ...), "
                          "or --engine URL to put tuneloop in front of another server")
    served, splits = plan_models(options.run_dirs, options.names, options.splits)
    if options.engine_url:
        from tuneloop.serve.engine import LoadedModel
        from tuneloop.serve.local_engine import weights_version
        from tuneloop.serve.proxy_engine import ProxyEngine

        models = {}
        for model_id, run_dir in served.items():
            weights = read_run(run_dir, "cpu", "fp32")  # only where the weights are; the upstream loads them
            models[model_id] = LoadedModel(model_id, run_dir, weights.base, weights.adapter,
                                           weights_version(weights.adapter or weights.full_model))
        engine = ProxyEngine(options.engine_url, models, options.engine_api_key)
        if not served:
            asyncio.run(_list_upstream(engine))
            served = {model_id: None for model_id in engine.models()}
    else:
        from tuneloop.serve.local_engine import LocalEngine

        engine = LocalEngine(options.max_batch_size, options.device, options.dtype)
        for model_id, run_dir in served.items():
            info = engine.add(model_id, read_run(run_dir, options.device, options.dtype))
            say(f"loaded {model_id} from {run_dir} ({'adapter on ' + info.base if info.adapter else 'full model'},"
                f" weights {info.version})")
    store = None
    if not options.no_store:
        first = next((p for p in served.values() if p is not None), None)
        url = store_url(options.store, first.resolve().parent if first else Path.cwd())
        store = Store(url, raw=options.store_raw)
        say(f"store: {store.engine.url.render_as_string(hide_password=True)}"
            f"{' (raw: PII kept)' if options.store_raw else ' (PII redacted)'}")
    return ServeState(engine, Router(list(served), splits), store, options.limits, keys,
                      replica=f"{socket.gethostname()}:{options.port}", promotion_interval=options.follow_promotions)


async def _list_upstream(engine) -> None:
    await engine.start()
    await engine.stop()


def serve(options: ServeOptions, say=print) -> None:
    import uvicorn

    state = build_state(options, say)
    for alias, variants in state.router.splits.items():
        say(f"split {alias}: " + ", ".join(f"{model_id} {weight:g}" for model_id, weight in variants))
    say(f"serving {', '.join(state.router.names())} on http://{options.host}:{options.port}/v1"
        f"{'' if state.key_hashes else ' (no API key)'}")
    logging.getLogger("tuneloop.serve").setLevel(logging.INFO)
    uvicorn.run(create_app(state), host=options.host, port=options.port, log_level="warning",
                timeout_graceful_shutdown=10)
