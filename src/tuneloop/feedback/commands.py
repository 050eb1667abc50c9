"""`tuneloop feedback export`, `tuneloop retrain`: the loop's commands, thin over tuneloop.feedback's modules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from tuneloop.feedback.store_export import export_store

feedback_app = typer.Typer(help="Users' feedback from the serve store as training data.", no_args_is_help=True)

StoreArg = Annotated[str, typer.Argument(help="The serve store: a SQLite file path or a SQLAlchemy URL "
                                              "(postgresql+psycopg://...).")]


def _say(message: str) -> None:
    typer.echo(message, err=True)


@feedback_app.command("export")
def export_command(
    store: StoreArg,
    out: Annotated[Path, typer.Option(help="The directory to write sft/preference/kto files into.")],
    run: Annotated[Path | None, typer.Option(help="The served run: its frozen test questions are dropped from the "
                                                  "export.")] = None,
    since: Annotated[str | None, typer.Option(help="Only feedback since then: 24h, 7d or an ISO date/time.")] = None,
    model: Annotated[str | None, typer.Option(help="Only requests this model id (or A/B alias) answered.")] = None,
    reviewed: Annotated[bool, typer.Option(help="Only feedback a reviewer accepted in `tuneloop ui`'s inbox "
                                                "(discarded feedback is never exported).")] = False,
) -> None:
    """Turn stored feedback into training files: sft, preference and kto jsonl (rules: docs/feedback-loop.md)."""
    export_store(store, out, run, since, model, console_print=_say, reviewed_only=reviewed)
