"""Write rows back as they were read, in the file type the name says: jsonl, csv or tsv."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from tuneloop.errors import DataError
from tuneloop.workspace import write_jsonl, write_text

ROW_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".tsv")


def write_rows(path: Path, rows: list[dict]) -> None:
    """Atomically write rows; csv/tsv columns are every key in order of first appearance."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        write_jsonl(path, rows)
        return
    if suffix not in (".csv", ".tsv"):
        raise DataError(f"{path}: write rows to one of {', '.join(ROW_SUFFIXES)}.")
    for row in rows:
        for key, value in row.items():
            if isinstance(value, list | dict):  # a csv cell would hold its Python repr: silent damage
                raise DataError(f"{path}: column '{key}' holds a {type(value).__name__}, which a csv cell "
                                "cannot; write .jsonl instead.")
    columns = list(dict.fromkeys(key for row in rows for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, delimiter="\t" if suffix == ".tsv" else ",", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(path, buffer.getvalue())
