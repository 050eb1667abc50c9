"""IOB tags of token-classification rows: check each row, bring a file's tags to IOB2, and name the entity types.

IOB2, what training and evaluation use: an entity starts with B-TYPE and continues with I-TYPE; O is
outside any entity. IOB1 (the original CoNLL-2003 files): an entity starts with I-TYPE, and B-TYPE
appears only where an entity directly follows another of the same type. Both read alike, the way the
CoNLL `conlleval` script reads them: an I-TYPE that does not continue an entity of its type starts one.
`normalize_file_tags` rewrites each such tag as B-TYPE. In an IOB1 file that is the IOB1 -> IOB2
conversion; in an IOB2 file (one that also starts entities with B- after O) the same rewrite repairs
invalid sequences such as `O I-PER`. Either way the tags are repaired, never dropped, and the data
report says which it was, how many tags changed and where the first ones are.
"""

from __future__ import annotations

import re

TAG_COLUMNS = ("tags", "ner_tags", "labels")
OUTSIDE = "O"
_TAG = re.compile(r"^[BI]-\S+$")
SHOWN_REPAIRS = 5


def checked_token_row(tokens: object, tags: object, tag_column: str = "tags") -> dict:
    """{"tokens", "tags"} for one row; ValueError naming the first problem (the caller adds file:line)."""
    if not isinstance(tokens, list) or not tokens:
        raise ValueError("field 'tokens' must be a non-empty list of words")
    if not isinstance(tags, list):
        raise ValueError(f"field '{tag_column}' must be a list of tags, one per word")
    for index, token in enumerate(tokens):
        if not isinstance(token, str) or not token.strip():
            raise ValueError(f"tokens[{index}] must be a non-empty word, got {token!r}")
    if len(tokens) != len(tags):
        raise ValueError(f"{len(tokens)} tokens but {len(tags)} {tag_column}: each word needs exactly one tag")
    for index, tag in enumerate(tags):
        problem = tag_problem(tag)
        if problem:
            raise ValueError(f"{tag_column}[{index}] (word {tokens[index]!r}): {problem}")
    return {"tokens": list(tokens), "tags": list(tags)}


def tag_problem(tag: object) -> str | None:
    """Why a tag is not an IOB tag (O, B-TYPE or I-TYPE), or None when it is one."""
    if isinstance(tag, bool) or isinstance(tag, int | float):
        return (f"{tag!r} is a number; write tag names (O, B-PER, I-PER, ...), since the file does not say "
                "which number stands for which tag")
    if not isinstance(tag, str):
        return f"expected a tag such as O, B-PER or I-PER, got {type(tag).__name__}"
    if tag == OUTSIDE or _TAG.match(tag):
        return None
    if re.match(r"^[ESL]-\S+$", tag) or tag.startswith("U-"):
        return f"{tag!r} is an IOBES/BILOU tag; only IOB1 and IOB2 (O, B-TYPE, I-TYPE) are read: convert the tags"
    return f"{tag!r} is not an IOB tag; expected O, B-TYPE or I-TYPE (IOB1 or IOB2)"


def entity_types(tags: list[str]) -> list[str]:
    """One entry per entity in IOB2 tags (each entity starts with exactly one B- tag)."""
    return [tag[2:] for tag in tags if tag.startswith("B-")]


def _continues(previous: str, tag: str) -> bool:
    return previous != OUTSIDE and previous[2:] == tag[2:]


def _starts_with_inside(tags: list[str]) -> list[int]:
    """Positions of I-TYPE tags that begin an entity instead of continuing one of their type."""
    return [i for i, tag in enumerate(tags)
            if tag.startswith("I-") and not (i > 0 and _continues(tags[i - 1], tag))]


def _fresh_begins(tags: list[str]) -> int:
    """B-TYPE tags that do not follow an entity of the same type: IOB2 writes these, IOB1 never does."""
    return sum(1 for i, tag in enumerate(tags) if tag.startswith("B-") and not (i > 0 and _continues(tags[i - 1], tag)))


def to_iob2(tags: list[str]) -> list[str]:
    """The same entities in IOB2: every I-TYPE that starts an entity becomes B-TYPE."""
    changed = set(_starts_with_inside(tags))
    return ["B-" + tag[2:] if i in changed else tag for i, tag in enumerate(tags)]


def normalize_file_tags(examples: list[dict], locations: list[str], source: str) -> list[str]:
    """Rewrite every example's tags to IOB2 in place; return notes for the data report (empty when nothing changed).

    The file counts as IOB1 when entities start with I- and no B- tag ever starts an entity after O;
    otherwise an I- start is an invalid IOB2 sequence, repaired the same way and listed.
    """
    starts = [(row, position) for row, example in enumerate(examples)
              for position in _starts_with_inside(example["tags"])]
    if not starts:
        return []
    fresh = sum(_fresh_begins(example["tags"]) for example in examples)
    shown = [f"{locations[row]} word {position + 1} {examples[row]['tokens'][position]!r} "
             f"({examples[row]['tags'][position]})" for row, position in starts[:SHOWN_REPAIRS]]
    for example in examples:
        example["tags"] = to_iob2(example["tags"])
    if fresh == 0:
        return [f"{source}: IOB1 tags (entities start with I-); converted to IOB2: {len(starts)} tag(s) I-TYPE -> "
                "B-TYPE"]
    return [f"{source}: {len(starts)} invalid IOB2 sequence(s) (an entity starting with I-TYPE, not B-TYPE) "
            f"repaired as B-TYPE, the way conlleval reads them; e.g. {'; '.join(shown)}"]
