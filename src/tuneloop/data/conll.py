"""Read CoNLL column files (.conll, .iob, .txt): a word per line, its tag last, blank lines between sentences.

Columns are separated by whitespace; the first is the word and the last its tag (CoNLL-2003 has four:
word, part of speech, chunk, entity tag); the columns between are ignored. `-DOCSTART-` lines mark
documents and are skipped. Each sentence becomes a Row {"tokens": [...], "tags": [...]} tagged with the
file:line of its first word, so the token_classification format treats it like a jsonl row.

A sentence with a line that cannot be read comes back as a BadRow naming that line: a word line with
another column count than the file's first word line, a line with a single column, or a last column
that is not an IOB tag. IOB1 vs IOB2 is settled for the whole file later, by
`tuneloop.data.iob.normalize_file_tags`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from tuneloop.data.iob import tag_problem
from tuneloop.data.rows import BadRow, Row, decode_line, open_binary

DOCUMENT_MARKER = "-DOCSTART-"
SNIFFED_LINES = 50


def read_conll(path: Path) -> Iterator[Row | BadRow]:
    """Yield one Row per sentence (or a BadRow for a sentence with an unreadable line), in file order."""
    columns: tuple[int, int] | None = None  # (column count, line that set it)
    tokens: list[str] = []
    tags: list[str] = []
    start = 0
    problem: BadRow | None = None

    def finish() -> Row | BadRow | None:
        if problem is not None:
            return problem
        return Row(f"{path}:{start}", {"tokens": tokens, "tags": tags}) if tokens else None

    with open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            parts = decode_line(path, number, raw).split()
            if not parts or parts[0] == DOCUMENT_MARKER:
                sentence = finish()
                if sentence is not None:
                    yield sentence
                tokens, tags, problem = [], [], None
                continue
            if not tokens and problem is None:
                start = number
            if problem is not None:
                continue  # the rest of a bad sentence: one report per sentence is enough
            where = f"{path}:{number}"
            if len(parts) < 2:
                problem = BadRow(where, f"only one column ({parts[0]!r}); a word line needs the word first and "
                                        "its tag last, separated by whitespace")
                continue
            if columns is None:
                columns = (len(parts), number)
            elif len(parts) != columns[0]:
                problem = BadRow(where, f"{len(parts)} columns, but the first word line ({path}:{columns[1]}) has "
                                        f"{columns[0]}; every word line needs the same columns (word first, tag last)")
                continue
            bad_tag = tag_problem(parts[-1])
            if bad_tag:
                problem = BadRow(where, f"the last column {bad_tag}")
                continue
            tokens.append(parts[0])
            tags.append(parts[-1])
    sentence = finish()
    if sentence is not None:
        yield sentence


def looks_like_conll(path: Path) -> bool:
    """True when the first non-blank lines of a .txt file are CoNLL columns (word first, an IOB tag last);
    other .txt files are plain-text documents (data/load.py)."""
    seen = 0
    with open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            parts = decode_line(path, number, raw).split()
            if not parts or parts[0] == DOCUMENT_MARKER:
                continue
            if len(parts) < 2 or tag_problem(parts[-1]):
                return False
            seen += 1
            if seen >= SNIFFED_LINES:
                break
    return seen > 0

