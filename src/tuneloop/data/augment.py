"""Augment a training file: EDA edits, WordNet synonyms, and model paraphrase or back-translation.

Methods (`METHODS`):
    eda             one of random insertion, deletion or swap per copy (Wei & Zou 2019, alpha 0.1)
    synonym         replace up to 10% of the content words with a WordNet synonym
    paraphrase      ask a generator to reword the text
    back-translate  ask a generator to translate into a pivot language (French) and back into English

`augment_file` writes the original rows followed by `n` augmented copies of each. Only the input side of a
row changes (user messages, instruction and input, prompt, or the text of a classification row); replies,
completions and labels never do. Every copy carries `"augmented": {"method", "source_row"}` (csv:
`augmented_method`, `augmented_source_row`) so `is_augmented` can keep copies out of evaluation splits and
an audit of the output can tell them apart; `source_row` is the 1-based position of the copy's original in
the output (the input's row number unless bad rows were left out). Copies identical to their source are
dropped and counted.

WordNet comes from Debian's `wordnet-base` (/usr/share/wordnet, or $TUNELOOP_WORDNET), read through nltk.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from copy import deepcopy
from dataclasses import dataclass, replace
from pathlib import Path

from tqdm import tqdm

from tuneloop.data.formats import FORMAT_FIELDS, column_names, detect_format, to_example
from tuneloop.data.load import read_rows
from tuneloop.data.rows import BadRow, Row
from tuneloop.data.save import ROW_SUFFIXES, write_rows
from tuneloop.data.sharegpt import is_sharegpt
from tuneloop.data.text_generator import TextGenerator
from tuneloop.data.wordnet import synonyms, wordnet
from tuneloop.errors import DataError

METHODS = ("eda", "synonym", "paraphrase", "back-translate")
MODEL_METHODS = ("paraphrase", "back-translate")
EDA_ALPHA = 0.1  # share of words each EDA edit touches, and the deletion probability (Wei & Zou's default)
PARAPHRASE_PROMPT = (
    "Paraphrase the following text. Keep its meaning, change the wording. Reply with the paraphrase only.\n\n{text}"
)
TRANSLATE_PROMPT = "Translate the following text into {language}. Reply with the translation only.\n\n{text}"

GENERATE_CHUNK = 32  # prompts per generator call: small enough for a smooth progress bar


# Function words carry no meaning of their own, so EDA never swaps them for "synonyms".
STOPWORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves
""".split())

_TOKEN = re.compile(r"^(\W*)(.*?)(\W*)$", re.DOTALL)  # leading punctuation, word, trailing punctuation
_ALPHABETIC_WORD = re.compile(r"[A-Za-z]+(?:['-][A-Za-z]+)*")


# ---------------------------------------------------------------- text edits


@dataclass(frozen=True)
class _Token:
    prefix: str  # punctuation before the word, e.g. an opening quote
    word: str
    suffix: str  # punctuation after the word, e.g. a comma or the full stop
    space_after: str  # the original whitespace, so line breaks survive


def _tokenize(text: str) -> list[_Token]:
    parts = re.split(r"(\s+)", text.strip())
    tokens = []
    for chunk, space in zip(parts[::2], [*parts[1::2], ""], strict=True):
        prefix, word, suffix = _TOKEN.match(chunk).groups()
        tokens.append(_Token(prefix, word, suffix, space))
    return tokens


def _render(tokens: list[_Token], capitalize_first: bool) -> str:
    text = "".join(t.prefix + t.word + t.suffix + t.space_after for t in tokens).strip()
    if capitalize_first:
        text = re.sub(r"^(\W*)([a-z])", lambda m: m.group(1) + m.group(2).upper(), text)
    return text


def _starts_upper(text: str) -> bool:
    first = re.match(r"\W*(\w)", text)
    return bool(first and first.group(1).isupper())


def _is_content_word(word: str) -> bool:
    return bool(_ALPHABETIC_WORD.fullmatch(word)) and word.lower() not in STOPWORDS


def _with_case_of(replacement: str, original: str) -> str:
    return replacement[:1].upper() + replacement[1:] if original[:1].isupper() else replacement


def _synonym_replacement(tokens: list[_Token], rng: random.Random, count: int) -> list[_Token]:
    tokens = list(tokens)
    positions = [i for i, token in enumerate(tokens) if _is_content_word(token.word)]
    rng.shuffle(positions)
    replaced = 0
    for position in positions:
        if replaced == count:
            break
        options = synonyms(tokens[position].word)
        if options:
            synonym = _with_case_of(rng.choice(options), tokens[position].word)
            tokens[position] = replace(tokens[position], word=synonym)
            replaced += 1
    return tokens


def _random_insertion(tokens: list[_Token], rng: random.Random, count: int) -> list[_Token]:
    tokens = list(tokens)
    options = [found for t in tokens if _is_content_word(t.word) and (found := synonyms(t.word))]
    if not options:
        return tokens
    for _ in range(count):
        # Insert before an existing word (never after the last, so closing punctuation stays last) and inside
        # its opening punctuation, so a quote still opens the quoted text.
        position = rng.randrange(len(tokens))
        after = tokens[position]
        tokens[position] = replace(after, prefix="")
        tokens.insert(position, _Token(after.prefix, rng.choice(rng.choice(options)), "", " "))
    return tokens


def _random_deletion(tokens: list[_Token], rng: random.Random, probability: float) -> list[_Token]:
    if len(tokens) < 2:
        return tokens
    keep = [rng.random() >= probability for _ in tokens]
    if not any(keep):
        keep[rng.randrange(len(tokens))] = True
    kept: list[_Token] = []
    orphan_prefix = ""
    for token, keep_it in zip(tokens, keep, strict=True):
        if keep_it:
            kept.append(replace(token, prefix=orphan_prefix + token.prefix))
            orphan_prefix = ""
            continue
        # A deleted word's punctuation stays where it was: an opening quote moves to the next word,
        # a full stop to the previous one.
        orphan_prefix += token.prefix
        if kept:
            previous = kept[-1]
            kept[-1] = replace(
                previous,
                suffix=token.suffix or previous.suffix,
                space_after=max(previous.space_after, token.space_after, key=lambda space: space.count("\n")),
            )
    return kept


def _random_swap(tokens: list[_Token], rng: random.Random, count: int) -> list[_Token]:
    tokens = list(tokens)
    positions = [i for i, token in enumerate(tokens) if token.word]
    if len(positions) < 2:
        return tokens
    for _ in range(count):
        first, second = rng.sample(positions, 2)
        # Only the words move; punctuation and spacing stay in their places.
        tokens[first], tokens[second] = (
            replace(tokens[first], word=tokens[second].word),
            replace(tokens[second], word=tokens[first].word),
        )
    return tokens


def _edit_text(text: str, method: str, rng: random.Random) -> str:
    tokens = _tokenize(text)
    if not any(token.word for token in tokens):
        return text
    count = max(1, int(EDA_ALPHA * len(tokens)))
    if method == "synonym":
        edited = _synonym_replacement(tokens, rng, count)
    else:
        operation = rng.choice(("insert", "delete", "swap"))
        if operation == "insert":
            edited = _random_insertion(tokens, rng, count)
        elif operation == "delete":
            edited = _random_deletion(tokens, rng, EDA_ALPHA)
        else:
            edited = _random_swap(tokens, rng, count)
    if edited == tokens:
        return text
    return _render(edited, capitalize_first=_starts_upper(text))


def _generate(generator: TextGenerator, prompts: list[str], desc: str) -> list[str]:
    replies: list[str] = []
    with tqdm(total=len(prompts), desc=desc, unit="text", dynamic_ncols=True) as bar:
        for start in range(0, len(prompts), GENERATE_CHUNK):
            chunk = prompts[start : start + GENERATE_CHUNK]
            answers = generator.generate(chunk)
            if len(answers) != len(chunk):
                raise DataError(f"the generator answered {len(answers)} of {len(chunk)} prompts.")
            replies.extend(answers)
            bar.update(len(chunk))
    return replies


def _paraphrase(texts: list[str], generator: TextGenerator) -> list[str]:
    prompts = [PARAPHRASE_PROMPT.format(text=text) for text in texts]
    return _keep_source_if_blank(texts, _generate(generator, prompts, "paraphrase"))


def _back_translate(texts: list[str], generator: TextGenerator, pivot: str) -> list[str]:
    there = _generate(generator, [TRANSLATE_PROMPT.format(language=pivot, text=t) for t in texts], f"to {pivot}")
    there = _keep_source_if_blank(texts, there)
    back = _generate(generator, [TRANSLATE_PROMPT.format(language="English", text=t) for t in there], "to English")
    return _keep_source_if_blank(texts, back)


def _keep_source_if_blank(texts: list[str], replies: list[str]) -> list[str]:
    # An empty reply would make an empty row; keeping the source makes it a counted, skipped duplicate instead.
    return [reply if reply.strip() else text for text, reply in zip(texts, replies, strict=True)]


def _required(generator: TextGenerator | None, method: str) -> TextGenerator:
    if generator is None:
        raise DataError(f"augmentation method {method!r} writes with a model: pass generator= (a "
                        "tuneloop.models.generators.LocalGenerator or OpenAIGenerator; `tuneloop data augment` "
                        "builds one from --model or --endpoint).")
    return generator


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise DataError(f"unknown augmentation method {method!r}; choose one of: {', '.join(METHODS)}.")


def augment_text(text: str, method: str, rng: random.Random, generator: TextGenerator | None = None,
                 pivot: str = "French") -> str:
    """One augmented version of a text; EDA and synonym draw from `rng`, model methods ask `generator`."""
    _check_method(method)
    if method in MODEL_METHODS:
        generator = _required(generator, method)
        if method == "paraphrase":
            return _paraphrase([text], generator)[0]
        return _back_translate([text], generator, pivot)[0]
    wordnet()  # fail now if it is missing, not on whichever text first draws an insertion
    return _edit_text(text, method, rng)


# ---------------------------------------------------------------- files


def is_augmented(fields: dict) -> bool:
    """Whether a row is an augmented copy (jsonl tag or csv columns), which must stay out of evaluation splits."""
    return isinstance(fields.get("augmented"), dict) or bool(fields.get("augmented_method"))


def augment_file(src: str | Path, dst: str | Path, method: str, n: int, seed: int = 0,
                 generator: TextGenerator | None = None, pivot: str = "French", fmt: str = "auto") -> dict:
    """Write `src`'s rows to `dst` followed by `n` augmented copies of each; returns counts of what happened.

    Unreadable rows and rows that do not fit the format are left out and counted (`bad_rows_skipped`);
    copies identical to their source or to an earlier copy are left out and counted (`unchanged_skipped`).
    Rows that are already augmented copies pass through without being augmented again.
    """
    _check_method(method)
    src, dst = Path(src), Path(dst)
    if n < 1:
        raise DataError(f"n is {n}; ask for at least one augmented copy per row.")
    if dst.suffix.lower() not in ROW_SUFFIXES:
        raise DataError(f"{dst}: write augmented data to one of {', '.join(ROW_SUFFIXES)}.")
    if dst.resolve() == src.resolve():
        raise DataError(f"{dst}: is the input file; write the augmented data to a new file.")

    items = list(read_rows(src))
    readable = [item for item in items if isinstance(item, Row)]
    fmt = _checked_format(fmt, readable, str(src))
    rows = [row for row in readable if not isinstance(to_example(row, fmt), BadRow)]
    sources = [(number, row) for number, row in enumerate(rows, start=1) if not is_augmented(row.fields)]

    texts = [_get(row.fields, path) for _, row in sources for _ in range(n) for path in _text_paths(row.fields, fmt)]
    new_texts = _augment_texts(texts, method, seed, generator, pivot)
    copies, unchanged = _tagged_copies(sources, n, fmt, iter(new_texts), method)
    output = [row.fields for row in rows] + copies
    _write_rows(dst, output)
    return {
        "rows_in": len(items),
        "rows_out": len(output),
        "augmented": len(copies),
        "unchanged_skipped": unchanged,
        "bad_rows_skipped": len(items) - len(rows),
        "method": method,
    }


def _augment_texts(texts: list[str], method: str, seed: int, generator: TextGenerator | None,
                   pivot: str) -> list[str]:
    if method == "paraphrase":
        return _paraphrase(texts, _required(generator, method))
    if method == "back-translate":
        return _back_translate(texts, _required(generator, method), pivot)
    wordnet()  # fail now if it is missing, not on whichever text first draws an insertion
    rng = random.Random(seed)  # one stream for the whole file, so the output depends only on the seed
    return [_edit_text(text, method, rng) for text in texts]


def _checked_format(fmt: str, rows: list[Row], source: str) -> str:
    if fmt == "auto":
        fmt = detect_format(rows, source)
    elif fmt not in FORMAT_FIELDS:
        raise DataError(f"unknown data format {fmt!r}; choose auto or one of: {', '.join(FORMAT_FIELDS)}.")
    if fmt == "preference":
        raise DataError(
            f"{source}: preference data (prompt, chosen, rejected) cannot be augmented: rewording the prompt "
            "would no longer match the ranked replies. Augment the SFT data instead."
        )
    return fmt


def _text_paths(fields: dict, fmt: str) -> list[tuple]:
    """Where the input side of a row lives: the texts augmentation may rewrite."""
    if fmt == "chat":
        if is_sharegpt(fields):  # {"conversations": [{"from": "human", "value": ...}]}
            key = "conversations" if "conversations" in fields else "messages"
            return [(key, i, "value") for i, turn in enumerate(fields[key])
                    if str(turn.get("from")).lower() in ("human", "user") and isinstance(turn.get("value"), str)]
        return [("messages", i, "content") for i, message in enumerate(fields["messages"])
                if message["role"] == "user" and isinstance(message.get("content"), str)]
    if fmt == "alpaca":
        has_input = isinstance(fields.get("input"), str) and fields["input"].strip()
        return [("instruction",), ("input",)] if has_input else [("instruction",)]
    if fmt == "prompt_completion":
        return [("prompt",)]
    if fmt in ("classification", "summarization"):
        return [(column_names(fields, fmt)[0],)]  # the text, or the document to summarize
    return [("text",)]


def _get(fields: dict, path: tuple):
    for key in path:
        fields = fields[key]
    return fields


def _set(fields: dict, path: tuple, value: str) -> None:
    for key in path[:-1]:
        fields = fields[key]
    fields[path[-1]] = value


def _tagged_copies(sources: list[tuple[int, Row]], n: int, fmt: str, new_texts: Iterator[str],
                   method: str) -> tuple[list[dict], int]:
    """The augmented rows (texts taken in the order they were produced) and how many were duplicates."""
    copies: list[dict] = []
    unchanged = 0
    for number, row in sources:
        seen = [row.fields]
        for _ in range(n):
            copy = deepcopy(row.fields)
            for path in _text_paths(row.fields, fmt):
                _set(copy, path, next(new_texts))
            if copy in seen:
                unchanged += 1
                continue
            seen.append(copy)
            copies.append({**copy, "augmented": {"method": method, "source_row": number}})
    return copies, unchanged


def _write_rows(dst: Path, rows: list[dict]) -> None:
    write_rows(dst, rows if dst.suffix.lower() in (".jsonl", ".ndjson") else [_flat_row(fields) for fields in rows])


def _flat_row(fields: dict) -> dict:
    flat = {key: value for key, value in fields.items() if key != "augmented"}
    tag = fields.get("augmented")
    if isinstance(tag, dict):
        flat["augmented_method"], flat["augmented_source_row"] = tag["method"], tag["source_row"]
    return flat
