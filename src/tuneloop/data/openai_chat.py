"""Chat rows in OpenAI's fine-tuning format, in full, checked and brought to tuneloop's canonical chat example.

    {"messages": [
        {"role": "system" | "developer", "content": "..."},
        {"role": "user", "content": "..." | [{"type": "text", "text": "..."}, ...]},
        {"role": "assistant", "content": "..." | null, "weight": 0 | 1,
         "tool_calls": [{"id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "..."},
        {"role": "assistant", "content": "..."}],
     "tools": [{"type": "function", "function": {"name": ..., "description": ..., "parameters": {...}}}],
     "parallel_tool_calls": true | false}

Canonical form: {"messages": [...], "tools": [...] (when given)}. Every message keeps a string
"content" ("" for a reply that only calls tools); tool calls keep their id and have their arguments
parsed to an object (what chat templates expect); an assistant turn with weight 0 keeps "weight": 0
and is left out of the loss (tuneloop.data.encode), every other assistant turn is trained.
ShareGPT rows are converted to this form first (tuneloop.data.sharegpt).
"""

from __future__ import annotations

import json

ROLES = ("system", "developer", "user", "assistant", "tool")


def chat_example(fields: dict) -> dict:
    """The canonical example of a chat row (OpenAI or ShareGPT shape); ValueError says what is wrong."""
    from tuneloop.data.sharegpt import is_sharegpt, sharegpt_to_openai

    if is_sharegpt(fields):
        fields = sharegpt_to_openai(fields)
    tools = checked_tools(fields.get("tools"))
    messages = checked_messages(fields.get("messages"), fields.get("parallel_tool_calls"))
    example = {"messages": messages}
    if tools:
        example["tools"] = tools
    return example


def checked_tools(tools: object) -> list[dict] | None:
    if tools is None:
        return None
    if isinstance(tools, str):  # ShareGPT files (and some exports) keep the tool list as a JSON string
        try:
            tools = json.loads(tools) if tools.strip() else []
        except json.JSONDecodeError as exc:
            raise ValueError(f"'tools' is a string but not JSON ({exc.msg})") from None
    if not isinstance(tools, list):
        raise ValueError("'tools' must be a list of {type: function, function: {name, description, parameters}}")
    checked = []
    for index, tool in enumerate(tools):
        if isinstance(tool, dict) and "function" not in tool and "name" in tool:
            tool = {"type": "function", "function": tool}  # a bare function definition
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ValueError(f"tools[{index}] must be {{type: function, function: {{name, parameters}}}}")
        checked.append({"type": "function", "function": function})
    return checked


def checked_messages(messages: object, parallel_tool_calls: object = None) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise ValueError("'messages' must be a non-empty list of {role, content} objects")
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise ValueError("'parallel_tool_calls' must be true or false")
    checked: list[dict] = []
    call_ids: set[str] = set()
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise ValueError(f"{where} must be an object with 'role' and 'content'")
        role = message.get("role")
        if role == "function":
            raise ValueError(f"{where}.role 'function' is OpenAI's retired form; write it as a 'tool' message "
                             "answering an assistant 'tool_calls' entry")
        if role not in ROLES:
            raise ValueError(f"{where}.role is {role!r}; allowed: {', '.join(ROLES)}")
        role = "system" if role == "developer" else role
        content = _content_text(message.get("content"), where)
        out: dict = {"role": role, "content": content}
        if role == "assistant":
            calls = _checked_tool_calls(message.get("tool_calls"), where)
            if calls:
                if parallel_tool_calls is False and len(calls) > 1:
                    raise ValueError(f"{where} makes {len(calls)} tool calls but the row sets parallel_tool_calls: "
                                     "false")
                out["tool_calls"] = calls
                call_ids.update(call["id"] for call in calls if "id" in call)
            elif not content.strip():
                raise ValueError(f"{where}.content must be non-empty text (or the message must have tool_calls)")
            weight = 1 if message.get("weight") is None else message["weight"]
            if weight not in (0, 1) or isinstance(weight, bool):
                raise ValueError(f"{where}.weight is {weight!r}; allowed: 0 (no loss on this turn) or 1")
            if weight == 0:
                out["weight"] = 0
        else:
            if message.get("weight") is not None:  # a saved dataset fills absent keys with null
                raise ValueError(f"{where}.weight is set on a {role} message; only assistant turns take a weight")
            if role == "tool":
                call_id = message.get("tool_call_id")
                if call_id is not None and call_ids and call_id not in call_ids:
                    raise ValueError(f"{where}.tool_call_id {call_id!r} answers no earlier tool call")
                if call_id is not None:
                    out["tool_call_id"] = str(call_id)
                if isinstance(message.get("name"), str):
                    out["name"] = message["name"]
            elif not content.strip():
                raise ValueError(f"{where}.content must be non-empty text")
        checked.append(out)
    if checked[-1]["role"] != "assistant":
        raise ValueError("the last message must be the assistant's reply (it is what the model learns)")
    if not any(m["role"] == "user" for m in checked):
        raise ValueError("no user message")
    if all(m.get("weight") == 0 for m in checked if m["role"] == "assistant"):
        raise ValueError("every assistant turn has weight 0: nothing to learn from this row")
    return checked


def _content_text(content: object, where: str) -> str:
    """Text content as a string; OpenAI's list of content parts joined (text parts only)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"{where}.content has a {kind!r} part; only text parts are supported")
            parts.append(part["text"])
        return "".join(parts)
    raise ValueError(f"{where}.content must be non-empty text, got {type(content).__name__}")


def _checked_tool_calls(calls: object, where: str) -> list[dict]:
    if calls is None:
        return []
    if not isinstance(calls, list):
        raise ValueError(f"{where}.tool_calls must be a list")
    checked = []
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ValueError(f"{where}.tool_calls[{index}] must be {{type: function, function: {{name, arguments}}}}")
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}.tool_calls[{index}].function.arguments is not JSON ({exc.msg})") from None
        if not isinstance(arguments, dict):
            raise ValueError(f"{where}.tool_calls[{index}].function.arguments must be a JSON object")
        out = {"type": "function", "function": {"name": function["name"], "arguments": arguments}}
        if call.get("id") is not None:
            out["id"] = str(call["id"])
        checked.append(out)
    return checked


def message_text(message: dict) -> str:
    """A message's text for the data checks: its content, and its tool calls written out."""
    calls = [json.dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]}, sort_keys=True)
             for c in message.get("tool_calls", [])]
    return "\n".join(part for part in [message["content"], *calls] if part)
