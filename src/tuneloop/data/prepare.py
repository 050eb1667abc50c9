"""Read a data file into validated examples in canonical form (load_examples), and split validation off.

Each example is in the canonical format of `tuneloop.data.formats` and keeps the `file:line` it was read
from. The data stage of a run, which writes the splits, is data/stage.py.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.data.formats import DEFAULT_SUMMARY_INSTRUCTION, detect_format, to_example
from tuneloop.data.load import file_kind, read_rows
from tuneloop.data.rows import BadRow, Row
from tuneloop.errors import DataError

SHOWN_PROBLEMS = 10


@dataclass
class LoadedFile:
    path: str
    format: str
    examples: list[dict]
    bad_rows: list[BadRow] = field(default_factory=list)
    locations: list[str] = field(default_factory=list)  # "file:line" of each example
    raw_rows: list[dict] = field(default_factory=list)  # the fields as read, for checks on the raw columns
    stopped_early: bool = False  # max_rows was reached
    notes: list[str] = field(default_factory=list)  # what reading changed, e.g. IOB1 tags converted to IOB2


def load_examples(
    path: str | Path, fmt: str = "auto", skip_invalid: bool = False, max_rows: int | None = None,
    summary_instruction: str = DEFAULT_SUMMARY_INSTRUCTION,
) -> LoadedFile:
    """Every example in a file (or its first max_rows rows), in canonical form; stops on malformed rows
    unless skip_invalid. summary_instruction opens the user turn of summarization examples."""
    if file_kind(Path(path)) == "txt" and fmt not in ("auto", "text", "token_classification"):
        raise DataError(f"{path}: a .txt file holds plain-text documents (the text format) or CoNLL columns, but "
                        f"data.format is {fmt}. Set data.format: text (or auto), or give a jsonl/csv file in the "
                        f"{fmt} format.")
    rows: list[Row] = []
    bad_rows: list[BadRow] = []
    stopped_early = False
    for item in read_rows(path):
        if max_rows is not None and len(rows) + len(bad_rows) >= max_rows:
            stopped_early = True
            break
        (rows if isinstance(item, Row) else bad_rows).append(item)
    if fmt == "auto":
        fmt = detect_format(rows, str(path)) if rows else "chat"
    examples, locations, raw_rows = [], [], []
    for row in rows:
        converted = to_example(row, fmt, summary_instruction)
        if isinstance(converted, BadRow):
            bad_rows.append(converted)
        else:
            examples.append(converted)
            locations.append(row.where)
            raw_rows.append(row.fields)
    if bad_rows and not skip_invalid:
        shown = "\n".join(f"  {bad}" for bad in bad_rows[:SHOWN_PROBLEMS])
        more = f"\n  ... and {len(bad_rows) - SHOWN_PROBLEMS} more" if len(bad_rows) > SHOWN_PROBLEMS else ""
        raise DataError(
            f"{path}: {len(bad_rows)} malformed row(s):\n{shown}{more}\n"
            "Fix these rows, or set data.skip_invalid: true to skip them (the count is reported)."
        )
    if not examples:
        shown = "".join(f"\n  {bad}" for bad in bad_rows[:SHOWN_PROBLEMS])
        more = f"\n  ... and {len(bad_rows) - SHOWN_PROBLEMS} more" if len(bad_rows) > SHOWN_PROBLEMS else ""
        raise DataError(f"{path}: no usable examples ({len(bad_rows)} malformed row(s)):{shown}{more}")
    notes = []
    if fmt == "token_classification":
        from tuneloop.data.iob import normalize_file_tags

        notes = normalize_file_tags(examples, locations, str(path))
    return LoadedFile(str(path), fmt, examples, bad_rows, locations, raw_rows, stopped_early, notes)


def split_validation(examples: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A seeded random split; at least one example lands on each side."""
    if len(examples) < 2:
        raise DataError(
            f"only {len(examples)} training example(s): too few to split off validation. "
            "Add examples or set data.validation_file."
        )
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    n_validation = min(max(1, round(len(examples) * share)), len(examples) - 1)
    held = set(order[:n_validation])
    train = [ex for i, ex in enumerate(examples) if i not in held]
    validation = [ex for i, ex in enumerate(examples) if i in held]
    return train, validation
