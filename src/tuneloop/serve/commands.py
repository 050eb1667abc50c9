"""The `tuneloop serve` and `tuneloop monitor` commands (registered on the main app in cli.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tuneloop.errors import ConfigError


def serve_command(
    run_dirs: Annotated[list[Path] | None, typer.Argument(help="Run directories to serve; each is a model id "
                                                                "(its directory name).")] = None,
    name: Annotated[list[str] | None, typer.Option("--name", help="ALIAS=RUN_DIR: serve a run under another "
                                                                  "model id (repeatable).")] = None,
    split: Annotated[list[str] | None, typer.Option("--split", help="ALIAS=RUN_A:90,RUN_B:10: A/B split by "
                                                                    "weight, sticky per user (repeatable).")] = None,
    host: Annotated[str, typer.Option(help="Address to listen on; beyond loopback needs --api-key-file.")] =
    "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
    api_key_file: Annotated[Path | None, typer.Option(help="API keys, one per line; every route but /health "
                                                           "then needs 'Authorization: Bearer KEY'.")] = None,
    insecure_no_auth: Annotated[bool, typer.Option(help="Allow a non-loopback --host without API keys.")] = False,
    store: Annotated[str | None, typer.Option(help="Where requests and feedback go: a SQLite file or a URL "
                                                   "(postgresql+psycopg://...); default serve.db beside the "
                                                   "first run.")] = None,
    no_store: Annotated[bool, typer.Option(help="Keep nothing (feedback is then refused).")] = False,
    store_raw: Annotated[bool, typer.Option(help="Store prompts and replies without redacting PII.")] = False,
    engine: Annotated[str | None, typer.Option(help="An OpenAI-compatible server (vLLM, llama.cpp, another "
                                                    "tuneloop) to generate with instead of this process.")] = None,
    engine_api_key: Annotated[str | None, typer.Option(help="API key for --engine.", envvar="TUNELOOP_ENGINE_KEY")]
    = None,
    device: Annotated[str | None, typer.Option(help="Override the runs' model.device (auto, cpu, cuda).")] = None,
    dtype: Annotated[str | None, typer.Option(help="Override the runs' model.dtype (auto, bf16, fp16, fp32).")]
    = None,
    max_batch_size: Annotated[int, typer.Option(min=1, help="Rows decoded together per model.")] = 32,
    max_concurrent: Annotated[int, typer.Option(min=1, help="Requests answered or queued at once; more get "
                                                            "a 429.")] = 64,
    max_prompt_tokens: Annotated[int, typer.Option(min=1)] = 4096,
    max_tokens: Annotated[int, typer.Option(min=1, help="The most a request may ask for.")] = 2048,
    default_max_tokens: Annotated[int, typer.Option(min=1, help="When a request does not say.")] = 256,
    max_body_bytes: Annotated[int, typer.Option(min=1024)] = 1_000_000,
    follow_promotions: Annotated[float, typer.Option(min=0, help="Seconds between checks of the store for "
                                                                 "promotions other replicas took (0: never).")] = 5.0,
) -> None:
    """Serve runs over the OpenAI API (chat, completions, streaming), storing requests and feedback."""
    from tuneloop.serve.app import Limits
    from tuneloop.serve.server import ServeOptions, serve

    if store and no_store:
        raise ConfigError("--store and --no-store contradict each other; give one")
    limits = Limits(max_prompt_tokens=max_prompt_tokens, max_tokens=max_tokens,
                    default_max_tokens=min(default_max_tokens, max_tokens), max_body_bytes=max_body_bytes,
                    max_concurrent=max_concurrent)
    serve(ServeOptions(run_dirs=list(run_dirs or []), names=list(name or []), splits=list(split or []), host=host,
                       port=port, api_key_file=api_key_file, insecure_no_auth=insecure_no_auth, store=store,
                       no_store=no_store, store_raw=store_raw, engine_url=engine, engine_api_key=engine_api_key,
                       device=device, dtype=dtype, max_batch_size=max_batch_size, limits=limits,
                       follow_promotions=follow_promotions),
          say=lambda message: typer.echo(message, err=True))


def monitor_command(
    store: Annotated[str, typer.Argument(help="The store: a SQLite file (serve.db) or a SQLAlchemy URL.")],
    out: Annotated[Path, typer.Option(help="The HTML page to write.")] = Path("monitor.html"),
    since: Annotated[str | None, typer.Option(help="Only requests since then: 24h, 7d or an ISO date.")] = None,
    drift_threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="Alert when more than this share of "
                                                   "prompts is far from every training prompt.")] = 0.3,
) -> None:
    """Write a monitoring page: traffic, latency, errors, feedback per variant with a test, drift, PII."""
    from tuneloop.serve.monitor import write_monitor
    from tuneloop.serve.store import parse_since, store_url

    if "://" not in store and not Path(store).is_file():
        raise ConfigError(f"{store}: no such store file; pass the serve.db the server wrote, or a database URL")
    summary = write_monitor(store_url(store, Path.cwd()), out, parse_since(since), drift_threshold)
    for alert in summary["alerts"]:
        typer.echo(f"ALERT: {alert}", err=True)
    typer.echo(f"wrote {out} ({summary['requests']} requests, {summary['feedback']} feedback)", err=True)
