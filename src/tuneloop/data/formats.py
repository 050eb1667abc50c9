"""Turn rows of any supported format into one canonical example: chat `messages` (or raw `text`).

Formats:
    chat               {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}
    alpaca             {"instruction": str, "input": str (optional), "output": str}
    prompt_completion  {"prompt": str, "completion": str}
    text               {"text": str}  (plain text; the loss covers every token)
An optional "answer" field (a short string a correct reply must contain) is kept for evaluation.
"""

from __future__ import annotations

from tuneloop.data.load import BadRow, Row
from tuneloop.errors import DataError

FORMAT_KEYS = {
    "chat": ("messages",),
    "alpaca": ("instruction", "output"),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}
ROLES = ("system", "user", "assistant")
KEPT_FIELDS = ("answer",)


def detect_format(rows: list[Row], source: str) -> str:
    """The format whose required keys the first readable row has; a clear error if none fits."""
    for row in rows[:1]:
        for name, keys in FORMAT_KEYS.items():
            if all(key in row.fields for key in keys):
                return name
        raise DataError(
            f"{row.where}: cannot tell the data format from the columns {sorted(row.fields)}. Expected one of: "
            + "; ".join(f"{name} ({', '.join(keys)})" for name, keys in FORMAT_KEYS.items())
            + ". Rename the columns or set data.format."
        )
    raise DataError(f"{source}: no rows to read.")


def to_example(row: Row, fmt: str) -> dict | BadRow:
    """The canonical example for one row, or a BadRow saying what is wrong with it."""
    fields = row.fields
    missing = [key for key in FORMAT_KEYS[fmt] if key not in fields]
    if missing:
        return BadRow(row.where, f"missing field(s) {missing} required by the {fmt} format")
    try:
        if fmt == "chat":
            example = {"messages": _checked_messages(fields["messages"])}
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
