"""Clean a data file: drop invalid rows, remove exact or near duplicates, redact personal data.

The output keeps each row's fields as read (jsonl, or csv/tsv when the output name says so), so
the cleaned file is a drop-in replacement for the input; the audit can be re-run on it.
"""

from __future__ import annotations

from pathlib import Path

from tuneloop.data.dedup import clusters, exact_duplicate_groups, near_duplicate_pairs
from tuneloop.data.prepare import SHOWN_PROBLEMS, load_examples
from tuneloop.data.save import write_rows
from tuneloop.data.text_fields import example_text
from tuneloop.errors import DataError


def clean_file(
    path: str | Path, out: str | Path, dedup: str | None = None, redact_pii: bool = False,
    drop_invalid: bool = False, fmt: str = "auto", threshold: float = 0.8,
) -> dict:
    loaded = load_examples(path, fmt, skip_invalid=True)
    if loaded.bad_rows and not drop_invalid:
        shown = "\n".join(f"  {bad}" for bad in loaded.bad_rows[:SHOWN_PROBLEMS])
        raise DataError(f"{path}: {len(loaded.bad_rows)} invalid row(s):\n{shown}\nPass --drop-invalid to drop them.")
    texts = [example_text(ex) for ex in loaded.examples]
    keep = list(range(len(texts)))
    if dedup == "exact":
        repeats = {i for group in exact_duplicate_groups(texts) for i in group[1:]}
        keep = [i for i in keep if i not in repeats]
    elif dedup == "near":
        cluster_of = clusters(len(texts), near_duplicate_pairs(texts, threshold))
        keep = [i for i in keep if cluster_of[i] == i]  # the first row of each cluster is its root
    elif dedup is not None:
        raise DataError(f"--dedup must be 'exact' or 'near', got {dedup!r}.")
    rows = [loaded.raw_rows[i] for i in keep]
    redacted_rows = 0
    if redact_pii:
        from tuneloop.data.privacy import redact_pii as redact

        cleaned = []
        for row in rows:
            new_row = _map_strings(row, lambda text: redact(text)[0])
            redacted_rows += new_row != row
            cleaned.append(new_row)
        rows = cleaned
    write_rows(Path(out), rows)
    return {
        "rows_in": len(loaded.examples) + len(loaded.bad_rows),
        "rows_out": len(rows),
        "invalid_dropped": len(loaded.bad_rows),
        "duplicates_removed": len(loaded.examples) - len(keep),
        "rows_redacted": redacted_rows,
        "out": str(out),
    }


def _map_strings(value, change):
    """Apply `change` to every string inside a row (message contents included), keeping the structure."""
    if isinstance(value, str):
        return change(value)
    if isinstance(value, list):
        return [_map_strings(item, change) for item in value]
    if isinstance(value, dict):
        return {key: (_map_strings(item, change) if key != "role" else item) for key, item in value.items()}
    return value
