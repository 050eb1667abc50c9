"""The `tuneloop ui` command (registered on the main app in cli.py): check the binding, open the store, serve."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from tuneloop.errors import ConfigError


def ui_command(
    workspace: Annotated[Path, typer.Argument(help="The folder of run directories to show (and start runs in).")]
    = Path("runs"),
    host: Annotated[str, typer.Option(help="Address to listen on; beyond loopback needs a password or API key.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535)] = 7860,
    password_file: Annotated[Path | None, typer.Option(help="A file whose first line is the UI password "
                                                            "(or set $TUNELOOP_UI_PASSWORD).")] = None,
    api_key_file: Annotated[Path | None, typer.Option(help="API keys, one per line (as `tuneloop serve` takes); "
                                                           "scripts send 'Authorization: Bearer KEY'.")] = None,
    insecure_no_auth: Annotated[bool, typer.Option(help="Allow a non-loopback --host with no password.")] = False,
    store: Annotated[str | None, typer.Option(help="The feedback store `tuneloop serve` uses: a SQLite file or a "
                                                   "URL (default: serve.db in the workspace).")] = None,
    examples: Annotated[Path, typer.Option(help="Example configs offered on the New run page.")] = Path("examples"),
) -> None:
    """A web UI for the whole loop: runs, live training, reports, side-by-side chat, the feedback inbox."""
    import uvicorn

    from tuneloop.serve.store import Store, store_url
    from tuneloop.ui.app import UiState, create_app
    from tuneloop.ui.auth import build_auth

    auth = build_auth(host, password_file, api_key_file, insecure_no_auth)
    if workspace.exists() and not workspace.is_dir():
        raise ConfigError(f"{workspace}: not a folder; give the folder your runs are in (default: runs).")
    workspace.mkdir(parents=True, exist_ok=True)
    state = UiState(workspace.resolve(), examples.resolve(), Store(store_url(store, workspace)), auth)
    say = lambda message: typer.echo(message, err=True)  # noqa: E731
    say(f"store: {state.store.engine.url.render_as_string(hide_password=True)}")
    say(f"tuneloop ui on http://{host}:{port} (workspace {state.workspace}; "
        f"{'sign-in required' if auth.enabled else 'no password: loopback only'})")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(state), host=host, port=port, log_level="warning", timeout_graceful_shutdown=5)
