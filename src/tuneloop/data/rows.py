"""Row and BadRow, what every file reader yields, and the byte-level helpers the line readers share.

`open_binary` opens a data file for reading bytes (gzipped when its suffix is .gz); `decode_line` decodes
one line as UTF-8 (a BOM on line 1 is dropped) and names the file:line of a byte that is not UTF-8.
The readers are data/load.py (jsonl, json, csv, tsv, parquet, plain text), data/conll.py and
data/hf_datasets.py.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

from tuneloop.errors import DataError


@dataclass(frozen=True)
class Row:
    where: str  # "file:line" (or "file:row N" for parquet)
    fields: dict


@dataclass(frozen=True)
class BadRow:
    where: str
    reason: str

    def __str__(self) -> str:
        return f"{self.where}: {self.reason}"


def open_binary(path: Path):
    if path.suffix.lower() == ".gz":
        return gzip.open(path, "rb")
    return path.open("rb")


def decode_line(path: Path, number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{path}:{number}: not valid UTF-8 (byte {exc.start} of the line). "
            "Re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8 IN > OUT`."
        ) from None
