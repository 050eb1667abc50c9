"""Turn rows of any supported format into one canonical example.

Formats (detected in this order from the first row's columns, or named with data.format):
    chat               {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}; OpenAI's
                       full form (tool calls, tool messages, tools, per-turn weight; data/openai_chat.py)
                       and ShareGPT {"conversations": [{"from", "value"}, ...]} (data/sharegpt.py)
    alpaca             {"instruction": str, "input": str (optional), "output": str}
    prompt_completion  {"prompt": str, "completion": str}
    preference         {"prompt": str (optional), "chosen": str, "rejected": str}
    summarization      {"document"|"dialogue"|"article"|"source": str, "summary"|"target"|"highlights"|"summary1": str}
    token_classification  {"tokens": [str, ...], "tags"|"ner_tags"|"labels": [IOB tag, ...]}; CoNLL column
                       files (.conll, .iob, .txt) read into the same rows (see data/conll.py, data/iob.py)
    classification     {"text"|"sentence"|"content": str, "label"|"category"|"intent"|"class"|"sentiment": ...}
    text               {"text": str}  (plain text; the loss covers every token)
Canonical examples: {"messages": [...]} for the first three and for summarization (the user asks for a
summary of the document with data.summary_instruction; the summary is the reply), {"prompt", "chosen",
"rejected"} for preference, {"tokens", "tags"} for token_classification (tags brought to IOB2 per file,
see data/iob.py), {"text", "label"} for classification (label a string, or a list of strings for
multi-label rows) and {"text"} for text. An optional "answer" field (a short string a correct reply
must contain) is kept for evaluation.
"""

from __future__ import annotations

from tuneloop.data.iob import TAG_COLUMNS, checked_token_row
from tuneloop.data.load import BadRow, Row
from tuneloop.data.openai_chat import chat_example
from tuneloop.errors import DataError

TEXT_NAMES = ("text", "sentence", "content")
LABEL_NAMES = ("label", "labels", "category", "intent", "class", "sentiment")
DOCUMENT_NAMES = ("document", "dialogue", "article", "source")
# summary1: the first of several reference summaries (DialogSum's test split); the others are not used.
SUMMARY_NAMES = ("summary", "target", "highlights", "summary1")
DEFAULT_SUMMARY_INSTRUCTION = "Summarize the following text in a few sentences."
# Each format's required fields; a field may go by any of several column names.
FORMAT_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "chat": (("messages", "conversations"),),  # OpenAI chat rows, or ShareGPT (data/openai_chat.py, data/sharegpt.py)
    "alpaca": (("instruction",), ("output",)),
    "prompt_completion": (("prompt",), ("completion",)),
    "preference": (("chosen",), ("rejected",)),
    "summarization": (DOCUMENT_NAMES, SUMMARY_NAMES),
    "token_classification": (("tokens",), TAG_COLUMNS),  # before classification: both may use "labels"
    "classification": (TEXT_NAMES, LABEL_NAMES),
    "text": (("text",),),
}
GENERATIVE_FORMATS = ("chat", "alpaca", "prompt_completion", "summarization", "text")
ROLES = ("system", "user", "assistant")
KEPT_FIELDS = ("answer",)


def detect_format(rows: list[Row], source: str) -> str:
    """The format whose required keys the first readable row has; a clear error if none fits."""
    for row in rows[:1]:
        for name in FORMAT_FIELDS:
            if column_names(row.fields, name) is not None:
                return name
        expected = "; ".join(
            f"{name} ({', '.join('|'.join(alternatives) for alternatives in fields)})"
            for name, fields in FORMAT_FIELDS.items()
        )
        raise DataError(
            f"{row.where}: cannot tell the data format from the columns {sorted(row.fields)}. Expected one of: "
            f"{expected}. Rename the columns or set data.format."
        )
    raise DataError(f"{source}: no rows to read.")


def column_names(fields: dict, fmt: str) -> list[str] | None:
    """The columns that hold each required field of a format in this row, or None if one is missing."""
    found = []
    for alternatives in FORMAT_FIELDS[fmt]:
        name = next((n for n in alternatives if n in fields), None)
        if name is None:
            return None
        found.append(name)
    return found


def to_example(row: Row, fmt: str, summary_instruction: str = DEFAULT_SUMMARY_INSTRUCTION) -> dict | BadRow:
    """The canonical example for one row, or a BadRow saying what is wrong with it."""
    fields = row.fields
    columns = column_names(fields, fmt)
    if columns is None:
        missing = [alts[0] if len(alts) == 1 else "|".join(alts)
                   for alts in FORMAT_FIELDS[fmt] if not any(n in fields for n in alts)]
        return BadRow(row.where, f"missing field(s) {missing} required by the {fmt} format")
    try:
        if fmt == "chat":
            example = chat_example(fields)
        elif fmt == "alpaca":
            instruction = _text(fields, "instruction")
            extra = fields.get("input") or ""
            if not isinstance(extra, str):
                raise ValueError("field 'input' must be text")
            user = f"{instruction}\n\n{extra.strip()}" if extra.strip() else instruction
            messages = [{"role": "user", "content": user}, {"role": "assistant", "content": _text(fields, "output")}]
            if isinstance(fields.get("system"), str) and fields["system"].strip():
                messages.insert(0, {"role": "system", "content": fields["system"]})
            example = {"messages": messages}
        elif fmt == "prompt_completion":
            example = {"messages": [
                {"role": "user", "content": _text(fields, "prompt")},
                {"role": "assistant", "content": _text(fields, "completion")},
            ]}
        elif fmt == "preference":
            example = {"chosen": _text(fields, "chosen"), "rejected": _text(fields, "rejected")}
            prompt = fields.get("prompt")
            example["prompt"] = prompt if isinstance(prompt, str) and prompt.strip() else None
        elif fmt == "token_classification":
            example = checked_token_row(fields["tokens"], fields[columns[1]], columns[1])
        elif fmt == "summarization":
            example = {"messages": [
                {"role": "user", "content": _summary_request(summary_instruction, _text(fields, columns[0]))},
                {"role": "assistant", "content": _text(fields, columns[1]).strip()},
            ]}
        elif fmt == "classification":
            example = {"text": _text(fields, columns[0]), "label": _label(fields, columns[1])}
        else:
            example = {"text": _text(fields, "text")}
    except ValueError as exc:
        return BadRow(row.where, str(exc))
    for key in KEPT_FIELDS:
        if key in fields and fields[key] is not None:
            example[key] = str(fields[key])
    return example


def _text(fields: dict, key: str) -> str:
    value = fields[key]
    if not isinstance(value, str):
        raise ValueError(f"field '{key}' must be text, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"field '{key}' is empty")
    return value


def _summary_request(instruction: str, document: str) -> str:
    """The user turn of a summarization example: the instruction (if any), a blank line, the document."""
    return "\n\n".join(part for part in (instruction.strip(), document.strip()) if part)


def _label(fields: dict, key: str) -> str | list[str]:
    value = fields[key]
    if isinstance(value, list):
        if not value:
            raise ValueError(f"field '{key}' is an empty list of labels")
        return [str(item) for item in value]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"field '{key}' (the label) is empty")
    return str(value).strip()


def _checked_messages(messages: object) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list of {role, content} objects")
    checked = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            raise ValueError(f"messages[{index}] must be an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"messages[{index}].role is {role!r}; allowed: {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"messages[{index}].content must be non-empty text")
        checked.append({"role": role, "content": content})
    if checked[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's reply (it is what the model learns)")
    if not any(m["role"] == "user" for m in checked):
        raise ValueError("no user message")
    return checked
