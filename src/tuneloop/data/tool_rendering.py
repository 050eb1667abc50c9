"""Conversations with tools, made renderable by any chat template.

A template that knows tools (it reads `tools` and each message's `tool_calls`, as Qwen's, Llama 3.1's
and Hermes' do) gets the conversation as it is. A template without tool support would drop the tool
calls silently (SmolLM2's renders only `content`), so the documented fallback writes them into the text
in the Hermes convention instead, which any template renders:
    - the tool definitions go into the system message, inside <tools></tools>;
    - an assistant tool call becomes <tool_call>{"name": ..., "arguments": ...}</tool_call> in its reply;
    - tool results become a user turn of <tool_response>...</tool_response> (consecutive results of
      parallel calls in one turn), so user and assistant turns still alternate.
Training and evaluation both render through `conversation_for_template`, so they always agree.
"""

from __future__ import annotations

import json

TOOLS_PREAMBLE = ("You may call one or more functions to assist with the user query. The functions are listed "
                  "within <tools></tools>:\n<tools>\n{tools}\n</tools>\nFor each call, reply with a JSON object "
                  "inside <tool_call></tool_call>: {{\"name\": <function-name>, \"arguments\": <args-json-object>}}")


def has_tools(example: dict) -> bool:
    return bool(example.get("tools")) or any(m.get("tool_calls") or m["role"] == "tool" for m in example["messages"])


def template_supports_tools(tokenizer) -> bool:
    """Whether the chat template reads tool calls (a template that never names them would drop them)."""
    template = getattr(tokenizer, "chat_template", None) or ""
    if isinstance(template, dict):  # several named templates: the tool one is what counts
        template = template.get("tool_use", "") or template.get("default", "")
    return "tool_calls" in template


def conversation_for_template(tokenizer, example: dict) -> tuple[list[dict], list[dict] | None]:
    """(messages, tools) to hand to apply_chat_template for this example."""
    messages = example["messages"]
    if not has_tools(example):
        return messages, None
    if template_supports_tools(tokenizer):
        return messages, example.get("tools")
    return folded_messages(messages, example.get("tools")), None


def folded_messages(messages: list[dict], tools: list[dict] | None) -> list[dict]:
    """The fallback above: tool definitions, calls and results written into plain-text turns."""
    folded: list[dict] = []
    if tools:
        listing = "\n".join(json.dumps(tool["function"], ensure_ascii=False) for tool in tools)
        preamble = TOOLS_PREAMBLE.format(tools=listing)
        if messages and messages[0]["role"] == "system":
            folded.append({"role": "system", "content": messages[0]["content"] + "\n\n" + preamble})
            messages = messages[1:]
        else:
            folded.append({"role": "system", "content": preamble})
    for message in messages:
        if message["role"] == "tool":
            response = f"<tool_response>\n{message['content']}\n</tool_response>"
            if folded and folded[-1].get("tool_response"):
                folded[-1]["content"] += "\n" + response
            else:
                folded.append({"role": "user", "content": response, "tool_response": True})
            continue
        if message.get("tool_calls"):
            calls = "\n".join(
                "<tool_call>\n" + json.dumps({"name": c["function"]["name"], "arguments": c["function"]["arguments"]},
                                             ensure_ascii=False) + "\n</tool_call>"
                for c in message["tool_calls"])
            content = (message["content"].strip() + "\n" + calls) if message["content"].strip() else calls
            folded.append({key: value for key, value in message.items() if key != "tool_calls"} | {"content": content})
            continue
        folded.append(dict(message))
    for message in folded:
        message.pop("tool_response", None)
    return folded
