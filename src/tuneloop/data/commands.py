"""`tuneloop data ...`: audit, clean, split, augment and estimate, as a Typer sub-app of the main CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

data_app = typer.Typer(
    help="The data workbench: audit, clean, split, augment and estimate before any training.",
    no_args_is_help=True,
)

FORMATS = (
    "auto, chat, alpaca, prompt_completion, preference, unpaired, summarization, classification, token_classification "
    "or text"
)


def _say(message: str) -> None:
    typer.echo(message, err=True)


@data_app.command()
def audit(
    files: Annotated[list[Path], typer.Argument(help="The training file, then any evaluation files.")],
    format: Annotated[str, typer.Option("--format", help=f"Data format: {FORMATS}.")] = "auto",
    model: Annotated[str | None, typer.Option(help="Measure lengths in this model's tokens.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Count rows longer than this many tokens.")] = None,
    near_threshold: Annotated[float, typer.Option(min=0.1, max=1.0, help="Jaccard similarity for near copies.")] = 0.8,
    language: Annotated[str, typer.Option(help="Expected language (ISO 639-1).")] = "en",
    max_rows: Annotated[int, typer.Option(min=1, help="Audit at most this many rows per file.")] = 200_000,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the full report as JSON.")] = None,
    html_out: Annotated[Path | None, typer.Option("--html", help="Write the report as a single HTML page.")] = None,
) -> None:
    """Check data before training: invalid rows, duplicates, leakage, PII, lengths, labels, language, bias."""
    from tuneloop.data.audit import AuditOptions, audit_files
    from tuneloop.data.audit_html import render_audit_html
    from tuneloop.workspace import write_json, write_text

    options = AuditOptions(format=format, near_threshold=near_threshold, expected_language=language,
                           max_length=max_length, max_rows=max_rows)
    if model:
        from tuneloop.data.templates import apply_template_choice
        from tuneloop.models.load import load_tokenizer
        from tuneloop.models.registry import resolve_model

        options.tokenizer = load_tokenizer(resolve_model(model, _say))
        if not getattr(options.tokenizer, "chat_template", None):
            apply_template_choice(options.tokenizer, "plain", model)
        options.tokenizer_name = model
    report = audit_files([str(f) for f in files], options)
    print_audit_summary(report)
    if json_out:
        write_json(json_out, report)
        _say(f"wrote {json_out}")
    if html_out:
        write_text(html_out, render_audit_html(report, f"Data audit: {files[0].name}"))
        _say(f"wrote {html_out}")


def print_audit_summary(report: dict) -> None:
    from rich.console import Console

    console = Console(stderr=True, highlight=False)
    for file in report["files"]:
        console.print(f"[bold]{file['path']}[/bold]: {file['valid_rows']:,} valid rows ({file['format']}), "
                      f"{file['invalid_rows']} invalid", soft_wrap=True)
    colors = {"error": "red", "warning": "yellow", "info": "cyan"}
    for item in report["summary"]:
        console.print(f"[{colors[item['severity']]}]{item['severity']:>7}[/] {item['check']}: {item['message']}",
                      soft_wrap=True)
    if not report["summary"]:
        console.print("[green]no problems found[/green]")


@data_app.command()
def clean(
    file: Annotated[Path, typer.Argument(help="The data file to clean.")],
    out: Annotated[Path, typer.Option(help="Where to write the cleaned rows (.jsonl, .csv or .tsv).")],
    dedup: Annotated[str | None, typer.Option(help="Remove 'exact' or 'near' duplicates (keeps the first).")] = None,
    redact_pii: Annotated[bool, typer.Option(help="Replace personal data with placeholders like [EMAIL].")] = False,
    drop_invalid: Annotated[bool, typer.Option(help="Drop malformed rows instead of stopping.")] = False,
    format: Annotated[str, typer.Option("--format", help=f"Data format: {FORMATS}.")] = "auto",
    near_threshold: Annotated[float, typer.Option(min=0.1, max=1.0)] = 0.8,
) -> None:
    """Write a cleaned copy of a data file."""
    from tuneloop.data.clean import clean_file

    summary = clean_file(file, out, dedup, redact_pii, drop_invalid, format, near_threshold)
    _say(f"{summary['rows_in']} rows in, {summary['rows_out']} out: {summary['invalid_dropped']} invalid dropped, "
         f"{summary['duplicates_removed']} duplicates removed, {summary['rows_redacted']} rows redacted -> {out}")


@data_app.command()
def split(
    file: Annotated[Path, typer.Argument(help="The data file to split.")],
    out: Annotated[Path, typer.Option(help="Directory for train.jsonl and test.jsonl.")],
    test_size: Annotated[float, typer.Option(min=0.0, max=1.0, help="Share of rows for test.")] = 0.1,
    stratify: Annotated[str | None, typer.Option(help="Keep this field's distribution equal in both splits.")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    format: Annotated[str, typer.Option("--format", help=f"Data format: {FORMATS}.")] = "auto",
    near_threshold: Annotated[float, typer.Option(min=0.1, max=1.0)] = 0.8,
    skip_invalid: Annotated[bool, typer.Option(help="Leave malformed rows out (and count them) instead of stopping.")]
    = False,
) -> None:
    """Split into train and test with near-duplicate clusters kept on one side (preference rows: by prompt)."""
    from tuneloop.data.split import split_file

    summary = split_file(file, out, test_size, stratify, seed, format, near_threshold, skip_invalid)
    _say(f"{summary['rows']} rows -> {summary['train']} train, {summary['test']} test in {out} "
         f"(near-duplicate clusters kept together, seed {seed})"
         + (f"; {summary['skipped_rows']} malformed row(s) left out" if summary.get("skipped_rows") else ""))


@data_app.command()
def augment(
    file: Annotated[Path, typer.Argument(help="The training file to augment (never an evaluation file).")],
    out: Annotated[Path, typer.Option(help="Where to write originals plus augmented rows.")],
    method: Annotated[str, typer.Option(help="eda, synonym, paraphrase or back-translate.")] = "eda",
    n: Annotated[int, typer.Option(min=1, help="Augmented copies per row.")] = 1,
    seed: Annotated[int, typer.Option()] = 0,
    model: Annotated[str, typer.Option(help="Local model for paraphrase / back-translate.")] = "smollm2-135m-instruct",
    endpoint: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL to generate with instead.")] = None,
    endpoint_model: Annotated[str | None, typer.Option(help="Model name at the endpoint.")] = None,
    pivot: Annotated[str, typer.Option(help="Pivot language for back-translation.")] = "French",
) -> None:
    """Add augmented copies of each row, tagged so splits keep them out of evaluation."""
    from tuneloop.data.augment import MODEL_METHODS, augment_file
    from tuneloop.models.generators import LocalGenerator, OpenAIGenerator

    generator = None
    if method in MODEL_METHODS:
        generator = OpenAIGenerator(endpoint, endpoint_model or model) if endpoint else LocalGenerator(model)
    summary = augment_file(file, out, method, n, seed=seed, generator=generator, pivot=pivot)
    _say(json.dumps(summary))


@data_app.command()
def estimate(
    config: Annotated[Path, typer.Argument(help="The run config.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a config key.")] = None,
    calibrate: Annotated[bool, typer.Option(help="Measure a few real training steps on this machine.")] = True,
) -> None:
    """Tokens per epoch, truncated rows, training time and peak memory here, and GPU memory needed."""
    from tuneloop.config.load import load_config
    from tuneloop.models.load import quiet_transformers
    from tuneloop.train.estimate import estimate_run

    quiet_transformers()
    report = estimate_run(load_config(config, set_), calibrate, _say)
    typer.echo(json.dumps(report, indent=2))
