"""The data stage: read the configured files, validate every row, split off validation, write the splits.

Output (in the run directory): data/train.jsonl, data/validation.jsonl, data/test.jsonl (when a
test file is given) in the canonical format of `tuneloop.data.formats`, and data/data_report.json.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.config import DataConfig
from tuneloop.data.formats import DEFAULT_SUMMARY_INSTRUCTION, detect_format, to_example
from tuneloop.data.load import BadRow, Row, file_kind, read_rows
from tuneloop.errors import DataError
from tuneloop.workspace import RunDir, write_json, write_jsonl

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


def split_test_off(examples: list[dict], share: float, seed: int) -> tuple[list[dict], list[dict]]:
    """A held-out test set that shares no near-duplicate cluster (for preference rows: no prompt) with what
    stays for training."""
    keep, test = split_test_indices(examples, share, seed)
    return [examples[i] for i in keep], [examples[i] for i in test]


def split_test_indices(examples: list[dict], share: float, seed: int) -> tuple[list[int], list[int]]:
    from tuneloop.data.split import split_rows, splitting_texts

    texts, links = splitting_texts(examples)
    keep, test = split_rows(texts, share, seed, links=links)
    if not test:
        raise DataError(f"data.test_size={share}: too few examples to split a test set off; add data.test_file.")
    return keep, test


def prepare_data(config: DataConfig, run: RunDir, seed: int, console_print=print) -> dict:
    """Run the data stage and return its report (also written to data/data_report.json)."""
    train = load_examples(config.train_file, config.format, config.skip_invalid,
                          summary_instruction=config.summary_instruction)
    report: dict = {"format": train.format, "files": {}}
    report["files"]["train"] = _file_report(train)
    pool = train.examples
    split_test: list[dict] = []
    audited_split = None  # the test rows split off train, audited for leakage like a test file
    if config.test_size:
        keep, held = split_test_indices(pool, config.test_size, seed)
        audited_split = LoadedFile(f"{train.path} (test split)", train.format, [pool[i] for i in held],
                                   locations=[train.locations[i] for i in held],
                                   raw_rows=[train.raw_rows[i] for i in held])
        pool, split_test = [pool[i] for i in keep], audited_split.examples
        train = LoadedFile(train.path, train.format, pool, train.bad_rows, [train.locations[i] for i in keep],
                           [train.raw_rows[i] for i in keep], train.stopped_early, train.notes)
        report["test_split"] = f"{config.test_size:.0%} of train, near-duplicate clusters kept together, seed {seed}"
    if config.max_train_examples and len(pool) > config.max_train_examples:
        pool = random.Random(seed).sample(pool, config.max_train_examples)
        report["train_subsample"] = f"{config.max_train_examples} examples drawn with seed {seed}"

    if config.validation_file:
        validation = load_examples(config.validation_file, config.format, config.skip_invalid,
                                   summary_instruction=config.summary_instruction)
        report["files"]["validation"] = _file_report(validation)
        train_examples, validation_examples = pool, validation.examples
        report["validation_split"] = "file"
    else:
        train_examples, validation_examples = split_validation(pool, config.validation_size, seed)
        report["validation_split"] = f"{config.validation_size:.0%} of train, seed {seed}"

    if config.max_validation_examples and len(validation_examples) > config.max_validation_examples:
        validation_examples = random.Random(seed).sample(validation_examples, config.max_validation_examples)
        report["validation_subsample"] = f"{config.max_validation_examples} examples drawn with seed {seed}"

    splits = {"train": train_examples, "validation": validation_examples}
    if config.test_file:
        test = load_examples(config.test_file, config.format, config.skip_invalid,
                             summary_instruction=config.summary_instruction)
        report["files"]["test"] = _file_report(test)
        splits["test"] = test.examples
    elif split_test:
        splits["test"] = split_test

    if config.audit.enabled:
        from tuneloop.data.audit_gate import audit_run_data

        files = ([train] + ([validation] if config.validation_file else []) + ([test] if config.test_file else [])
                 + ([audited_split] if audited_split else []))
        audit_run_data(config.audit, files, run, console_print)

    for name, examples in splits.items():
        write_jsonl(run.split(name), examples)
    report["examples"] = {name: len(examples) for name, examples in splits.items()}
    write_json(run.data / "data_report.json", report)

    skipped = sum(info["skipped_rows"] for info in report["files"].values())
    summary = ", ".join(f"{n} {name}" for name, n in report["examples"].items())
    console_print(f"data: {train.format} format; {summary} examples" + (f"; skipped {skipped} malformed row(s)"
                                                                        if skipped else ""))
    for info in report["files"].values():
        for note in info.get("notes", []):
            console_print(f"data: {note}")
        for problem in info["skipped_examples"]:
            console_print(f"  skipped {problem}")
    return report


def _file_report(loaded: LoadedFile) -> dict:
    return {
        "path": loaded.path,
        "examples": len(loaded.examples),
        "skipped_rows": len(loaded.bad_rows),
        "skipped_examples": [str(bad) for bad in loaded.bad_rows[:SHOWN_PROBLEMS]],
    } | ({"notes": loaded.notes} if loaded.notes else {})
