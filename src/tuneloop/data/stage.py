"""The data stage: read the configured files, validate every row, split off validation, write the splits.

Output (in the run directory): data/train.jsonl, data/validation.jsonl, data/test.jsonl (when a
test file is given) in the canonical format of `tuneloop.data.formats`, and data/data_report.json.
"""

from __future__ import annotations

import random

from tuneloop.config.schema import DataConfig
from tuneloop.data.prepare import SHOWN_PROBLEMS, LoadedFile, load_examples, split_validation
from tuneloop.workspace import RunDir, write_json, write_jsonl


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
        from tuneloop.data.split import split_test_indices

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
