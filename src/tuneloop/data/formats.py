"""Turn rows of any supported format into one canonical example.

Formats (detected in this order from the first row's columns, or named with data.format):
    unpaired           {"prompt"|"messages": str | messages, "completion": str, "label": true|false}  (KTO)
    chat               {"messages": [{"role": "system"|"user"|"assistant", "content": str}, ...]}; OpenAI's
                       full form (tool calls, tool messages, tools, per-turn weight; data/openai_chat.py)
                       and ShareGPT {"conversations": [{"from", "value"}, ...]} (data/sharegpt.py)
    alpaca             {"instruction": str, "input": str (optional), "output": str}
    prompt_completion  {"prompt": str, "completion": str}
    preference         {"prompt": str | messages (optional), "chosen": str | messages, "rejected": ...}; Anthropic
                       HH transcripts; OpenAI {"input": {"messages"}, "preferred_output", "non_preferred_output"}
    summarization      {"document"|"dialogue"|"article"|"source": str, "summary"|"target"|"highlights"|"summary1": str}
    token_classification  {"tokens": [str, ...], "tags"|"ner_tags"|"labels": [IOB tag, ...]}; CoNLL column
                       files (.conll, .iob, .txt) read into the same rows (see data/conll.py, data/iob.py)
    classification     {"text"|"sentence"|"content": str, "label"|"category"|"intent"|"class"|"sentiment": ...}
    text               {"text": str}  (plain text; the loss covers every token)
    prompt_only        {"prompt": str | "messages": [..., last the user's], <reference columns>}  (GRPO: the
                       model writes the reply and reward functions score it; detected when no other format
                       fits, or when the last message of `messages` is the user's)
Canonical examples: {"messages": [...]} for chat, alpaca, prompt_completion and summarization (the user asks for a
summary of the document with data.summary_instruction; the summary is the reply), {"prompt": messages,
"chosen", "rejected"} for preference and {"prompt": messages, "completion", "desirable"} for unpaired (see
data/preference_rows.py), {"tokens", "tags"} for token_classification (tags brought to IOB2 per file,
see data/iob.py), {"text", "label"} for classification (label a string, or a list of strings for
multi-label rows), {"text"} for text and {"prompt": [messages ending with the user's], <every other column
as read>} for prompt_only (the columns reach the reward functions by name, as TRL passes them). An optional
"answer" field (a short string a correct reply must contain) is kept for evaluation.
"""

from __future__ import annotations

from tuneloop.config.schema import DEFAULT_SUMMARY_INSTRUCTION
from tuneloop.data.iob import TAG_COLUMNS, checked_token_row
from tuneloop.data.openai_chat import chat_example
from tuneloop.data.preference_rows import preference_example, unpaired_example
from tuneloop.data.rows import BadRow, Row
from tuneloop.errors import DataError

TEXT_NAMES = ("text", "sentence", "content")
LABEL_NAMES = ("label", "labels", "category", "intent", "class", "sentiment")
DOCUMENT_NAMES = ("document", "dialogue", "article", "source")
# summary1: the first of several reference summaries (DialogSum's test split); the others are not used.
SUMMARY_NAMES = ("summary", "target", "highlights", "summary1")
# Each format's required fields; a field may go by any of several column names.
FORMAT_FIELDS: dict[str, tuple[tuple[str, ...], ...]] = {
    "unpaired": (("prompt", "messages"), ("completion",), ("label",)),  # before chat and prompt_completion
    "chat": (("messages", "conversations"),),  # OpenAI chat rows, or ShareGPT (data/openai_chat.py, data/sharegpt.py)
    "alpaca": (("instruction",), ("output",)),
    "prompt_completion": (("prompt",), ("completion",)),
    "preference": (("chosen", "preferred_output"), ("rejected", "non_preferred_output")),
    "summarization": (DOCUMENT_NAMES, SUMMARY_NAMES),
    "token_classification": (("tokens",), TAG_COLUMNS),  # before classification: both may use "labels"
    "classification": (TEXT_NAMES, LABEL_NAMES),
    "text": (("text",),),
    "prompt_only": (("prompt", "messages"),),  # last: any row with a prompt and no reply
}
# TRL passes these to every reward function itself, so a data column may not take their names.
RESERVED_PROMPT_COLUMNS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric",
                           "environments")
GENERATIVE_FORMATS = ("chat", "alpaca", "prompt_completion", "summarization", "text")
ROLES = ("system", "user", "assistant")
KEPT_FIELDS = ("answer",)


def detect_format(rows: list[Row], source: str) -> str:
    """The format whose required keys the first readable row has; a clear error if none fits."""
    for row in rows[:1]:
        if _ends_with_user_turn(row.fields.get("messages")):  # a conversation waiting for its reply
            return "prompt_only"
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
            example = preference_example(fields)
        elif fmt == "unpaired":
            example = unpaired_example(fields)
        elif fmt == "token_classification":
            example = checked_token_row(fields["tokens"], fields[columns[1]], columns[1])
        elif fmt == "summarization":
            example = {"messages": [
                {"role": "user", "content": _summary_request(summary_instruction, _text(fields, columns[0]))},
                {"role": "assistant", "content": _text(fields, columns[1]).strip()},
            ]}
        elif fmt == "classification":
            example = {"text": _text(fields, columns[0]), "label": _label(fields, columns[1])}
        elif fmt == "prompt_only":
            return _prompt_only_example(fields, columns[0])
        else:
            example = {"text": _text(fields, "text")}
    except ValueError as exc:
        return BadRow(row.where, str(exc))
    for key in KEPT_FIELDS:
        if key in fields and fields[key] is not None:
            example[key] = str(fields[key])
    return example


def _ends_with_user_turn(messages: object) -> bool:
    return (isinstance(messages, list) and bool(messages) and isinstance(messages[-1], dict)
            and messages[-1].get("role") == "user")


def _prompt_only_example(fields: dict, column: str) -> dict:
    """{"prompt": messages ending with the user's turn, <the other columns unchanged>} (raises ValueError)."""
    if column == "messages":
        messages = _checked_messages(fields["messages"], reply_last=False)
    else:
        messages = [{"role": "user", "content": _text(fields, "prompt")}]
        system = fields.get("system")
        if isinstance(system, str) and system.strip():
            messages.insert(0, {"role": "system", "content": system})
    reserved = [name for name in RESERVED_PROMPT_COLUMNS if name in fields]
    if reserved:
        raise ValueError(f"column(s) {reserved} clash with the arguments TRL passes to every reward function; "
                         "rename them")
    extra = {key: value for key, value in fields.items() if key not in (column, "system")}
    return {"prompt": messages, **extra}


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


def _checked_messages(messages: object, reply_last: bool = True) -> list[dict]:
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
    if reply_last and checked[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's reply (it is what the model learns)")
    if not reply_last and checked[-1]["role"] != "user":
        raise ValueError("the last message must be the user's (prompt_only rows hold the prompt; the model writes "
                         "the reply)")
    if not any(m["role"] == "user" for m in checked):
        raise ValueError("no user message")
    return checked
