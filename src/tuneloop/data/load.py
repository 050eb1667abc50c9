"""Read rows from jsonl, json, csv, tsv, parquet, CoNLL and plain-text files, each row tagged with its `file:line`;
and from directories: a Hugging Face dataset saved with save_to_disk (data/hf_datasets.py), or a folder of shards.

    data.train_file: data/shards              # *.parquet / *.jsonl(.gz) / *.json / *.csv files, in name order

A folder of shards (all of one type) is read shard by shard, each row tagged with its shard's own `file:line`.

A .txt file in CoNLL columns (one word per line, its IOB tag last; see data/conll.py) is read as
tagged sentences. Any other .txt file holds plain-text documents separated by blank lines (a line
that is empty or only whitespace); each document becomes one {"text": ...} row tagged with the line
it starts on, its lines joined with "\n" as written. This is the paragraph rule of HF datasets' text
loader (sample_by="paragraph"); to keep whole files with blank lines inside as single documents, write
them as jsonl rows with a "text" field instead.

Rows that cannot be read (bad JSON, ragged CSV rows, non-objects) come back as `BadRow`s (data/rows.py)
instead of raising, so the caller can either stop with every problem listed or skip them and say how many.
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from tuneloop.data.conll import looks_like_conll, read_conll
from tuneloop.data.hf_datasets import is_saved_dataset, read_saved_dataset
from tuneloop.data.rows import BadRow, Row, decode_line, open_binary
from tuneloop.errors import DataError

SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".tsv": "tsv", ".parquet": "parquet",
            ".conll": "conll", ".iob": "conll", ".txt": "txt"}  # CoNLL: one sentence per row (data/conll.py)


def read_rows(path: str | Path) -> Iterator[Row | BadRow]:
    """Yield every row of a data file in order; the file type comes from its suffix."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file. Check the path (relative paths start at the current directory).")
    if path.is_dir():  # a saved HF dataset (data/hf_datasets.py) or a folder of shards
        yield from _read_directory(path)
        return
    kind = file_kind(path)
    if kind is None:
        raise DataError(
            f"{path}: unknown file type '{''.join(path.suffixes)}'. Use one of: {', '.join(sorted(SUFFIXES))} "
            "(text types may be gzipped, e.g. .jsonl.gz)."
        )
    if kind == "parquet":
        yield from _read_parquet(path)
        return
    _reject_binary(path)
    if kind == "conll":
        yield from read_conll(path)
    elif kind == "jsonl":
        yield from _read_jsonl(path)
    elif kind == "txt":
        yield from (read_conll(path) if looks_like_conll(path) else _read_text_documents(path))
    elif kind == "json":
        yield from _read_json(path)
    else:
        yield from _read_delimited(path, "\t" if kind == "tsv" else ",")


def file_kind(path: Path) -> str | None:
    """jsonl / json / csv / tsv / parquet / txt from the suffix; a .gz suffix is looked through."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        kind = SUFFIXES.get(suffixes[-2]) if len(suffixes) > 1 else None
        return kind if kind != "parquet" else None
    return SUFFIXES.get(suffixes[-1]) if suffixes else None


def _read_directory(path: Path, split: str = "train") -> Iterator[Row | BadRow]:
    """Rows of a saved HF dataset (the given split of a DatasetDict) or of every shard in the folder."""
    if is_saved_dataset(path):
        yield from read_saved_dataset(path, split)
        return
    shards = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and file_kind(p))
    kinds = {file_kind(p) for p in shards}
    if not shards:
        raise DataError(f"{path}: a directory with neither a saved Hugging Face dataset (state.json) nor data files "
                        "(.parquet, .jsonl, .json, .csv, .tsv); point data.train_file at a file or such a folder.")
    if len(kinds) > 1:
        raise DataError(f"{path}: shards of several types ({', '.join(sorted(kinds))}); keep one type per folder.")
    for shard in shards:
        yield from read_rows(shard)


def _reject_binary(path: Path) -> None:
    try:
        with open_binary(path) as handle:
            head = handle.read(8192)
    except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot be read ({exc}).") from None
    if b"\x00" in head:
        raise DataError(f"{path}: looks like a binary file (it contains NUL bytes); expected UTF-8 text.")


def _read_jsonl(path: Path) -> Iterator[Row | BadRow]:
    # Read bytes line by line so a 2 GB file streams instead of being loaded whole.
    with open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            line = decode_line(path, number, raw).strip()
            if not line:
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                yield BadRow(where, f"not valid JSON ({exc.msg} at column {exc.colno})")
                continue
            if isinstance(record, dict):
                yield Row(where, record)
            else:
                yield BadRow(where, f"expected a JSON object, got {type(record).__name__}")


def _read_text_documents(path: Path) -> Iterator[Row]:
    """One row per blank-line-separated document, tagged with the line the document starts on."""
    lines: list[str] = []
    start = 0
    with open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            line = decode_line(path, number, raw).rstrip("\r\n")
            if line.strip():
                if not lines:
                    start = number
                lines.append(line)
            elif lines:
                yield Row(f"{path}:{start}", {"text": "\n".join(lines)})
                lines = []
    if lines:
        yield Row(f"{path}:{start}", {"text": "\n".join(lines)})


def _read_json(path: Path) -> Iterator[Row | BadRow]:
    with open_binary(path) as handle:
        raw = handle.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        offset = exc.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)  # utf-8-sig counts after the BOM
        line = raw[:offset].count(b"\n") + 1
        raise DataError(f"{path}:{line}: not valid UTF-8. Re-save the file as UTF-8.") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg}). A .json file holds one array of objects;"
                        " use .jsonl for one object per line.") from None
    if isinstance(document, dict) and len(document) == 1 and isinstance(next(iter(document.values())), list):
        document = next(iter(document.values()))  # {"data": [...]} wrappers are common
    if not isinstance(document, list):
        raise DataError(f"{path}: expected a JSON array of objects at the top level, got {type(document).__name__}.")
    starts = _array_item_lines(text)
    items_on_line = Counter(starts)
    for index, record in enumerate(document):
        line = starts[index] if index < len(starts) else None
        shared_line = line is not None and items_on_line[line] > 1  # e.g. a whole array on one line
        where = f"{path}:{line}" if line and not shared_line else f"{path}:{line or 1} (item {index + 1})"
        if isinstance(record, dict):
            yield Row(where, record)
        else:
            yield BadRow(where, f"expected a JSON object, got {type(record).__name__}")


def _array_item_lines(text: str) -> list[int]:
    """Line number where each top-level array item starts, so errors can say file:line."""
    decoder = json.JSONDecoder()
    position = text.find("[") + 1
    lines: list[int] = []
    line = text.count("\n", 0, position) + 1
    while True:
        while position < len(text) and text[position] in " \t\r\n,":
            if text[position] == "\n":
                line += 1
            position += 1
        if position >= len(text) or text[position] == "]":
            return lines
        lines.append(line)
        try:
            _, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError:
            return lines
        line += text.count("\n", position, end)
        position = end


def _read_delimited(path: Path, delimiter: str) -> Iterator[Row | BadRow]:
    with open_binary(path) as handle:
        # Decode line by line (not in big chunks) so an encoding error names its own line.
        lines = (decode_line(path, number, raw) for number, raw in enumerate(handle, start=1))
        reader = csv.reader(lines, delimiter=delimiter)
        try:
            header = next(reader, None)
            if not header:
                raise DataError(f"{path}: empty file; expected a header row with column names.")
            header = [name.strip() for name in header]
            for record in reader:
                where = f"{path}:{reader.line_num}"
                if not record or (len(record) == 1 and not record[0].strip()):
                    continue
                if len(record) != len(header):
                    yield BadRow(where, f"has {len(record)} fields, the header has {len(header)} ({', '.join(header)})")
                    continue
                yield Row(where, dict(zip(header, record, strict=True)))
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: unreadable CSV ({exc}).") from None


def _read_parquet(path: Path) -> Iterator[Row | BadRow]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a corrupt file
        raise DataError(f"{path}: not a readable parquet file ({exc}).") from None
    index = 0
    for batch in table.iter_batches(batch_size=4096):
        for record in batch.to_pylist():
            index += 1
            yield Row(f"{path}:row {index}", record)
