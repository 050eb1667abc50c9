"""ShareGPT rows (the community format Axolotl and LLaMA-Factory read), converted to OpenAI's chat shape.

    {"conversations": [{"from": "human", "value": "..."}, {"from": "gpt", "value": "..."}, ...],
     "system": "...", "tools": "[...]"}

`messages` may hold the turns instead of `conversations`. Roles, as LLaMA-Factory reads them:
human / user -> user; gpt / assistant / model / chatgpt / bard / bing -> assistant; system ->
system; function_call -> an assistant turn calling tools (its value is the JSON of
{"name", "arguments"} or a list of them, for parallel calls); observation / tool -> the tool's
result. A row-level `system` becomes the first message, `tools` (a list or its JSON string) the
tool definitions. The converted row is then checked like any OpenAI row (tuneloop.data.openai_chat).
"""

from __future__ import annotations

import json

ROLE_OF = {
    "human": "user", "user": "user",
    "gpt": "assistant", "assistant": "assistant", "model": "assistant", "chatgpt": "assistant",
    "bard": "assistant", "bing": "assistant",
    "system": "system",
    "function_call": "function_call",
    "observation": "tool", "tool": "tool", "function": "tool",
}
TURN_KEYS = ("conversations", "messages")


def is_sharegpt(fields: dict) -> bool:
    """A row whose turns are {from, value} objects (under conversations or messages)."""
    for key in TURN_KEYS:
        turns = fields.get(key)
        if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "from" in turns[0]:
            return True
    return "conversations" in fields and "messages" not in fields


def sharegpt_to_openai(fields: dict) -> dict:
    """The row in OpenAI's shape (messages with role/content/tool_calls); ValueError says what is wrong."""
    key = "conversations" if "conversations" in fields else "messages"
    turns = fields[key]
    if not isinstance(turns, list) or not turns:
        raise ValueError(f"'{key}' must be a non-empty list of {{from, value}} objects")
    messages: list[dict] = []
    system = fields.get("system")
    if system is not None:
        if not isinstance(system, str):
            raise ValueError("'system' must be text")
        if system.strip():
            messages.append({"role": "system", "content": system})
    calls = 0
    for index, turn in enumerate(turns):
        where = f"{key}[{index}]"
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise ValueError(f"{where} must be an object with 'from' and 'value'")
        role = ROLE_OF.get(str(turn["from"]).lower())
        if role is None:
            raise ValueError(f"{where}.from is {turn['from']!r}; allowed: {', '.join(sorted(ROLE_OF))}")
        value = turn["value"]
        if role == "function_call":
            messages.append({"role": "assistant", "content": "", "tool_calls": _tool_calls(value, where, calls)})
            calls += len(messages[-1]["tool_calls"])
            continue
        if not isinstance(value, str):
            raise ValueError(f"{where}.value must be text, got {type(value).__name__}")
        message = {"role": role, "content": value}
        if "weight" in turn:  # some ShareGPT exports carry OpenAI's per-turn weight
            message["weight"] = turn["weight"]
        messages.append(message)
    converted = {"messages": messages}
    if fields.get("tools") is not None:
        converted["tools"] = fields["tools"]
    return converted


def _tool_calls(value: object, where: str, numbered_before: int) -> list[dict]:
    """function_call turns: {"name", "arguments"} as JSON text (or already parsed), one call or a list."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{where}: a function_call value must be JSON {{name, arguments}} ({exc.msg})") from None
    calls = value if isinstance(value, list) else [value]
    converted = []
    for offset, call in enumerate(calls):
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise ValueError(f"{where}: a function_call needs a 'name' (and 'arguments')")
        converted.append({"id": f"call_{numbered_before + offset + 1}", "type": "function",
                          "function": {"name": call["name"], "arguments": call.get("arguments", {})}})
    return converted
