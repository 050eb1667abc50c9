"""Preference pairs and thumbs-up/down rows in the shapes people have them, turned into one canonical form.

Paired rows (format `preference`) become {"prompt": [chat messages], "chosen": str, "rejected": str}: the
conversation before the reply, then the two replies. Accepted shapes:
    {"prompt": str | messages, "chosen": str | messages, "rejected": str | messages}
    {"chosen": messages, "rejected": messages}     the shared turns before the last one are the prompt
    {"chosen": str, "rejected": str}               Anthropic HH transcripts ("\\n\\nHuman: ... \\n\\nAssistant: ..."),
                                                   split into turns; the shared turns are the prompt
    {"input": {"messages": [...]}, "preferred_output": [assistant message], "non_preferred_output": [...]}
                                                   OpenAI's preference fine-tuning rows
Unpaired rows (format `unpaired`, for KTO) become {"prompt": [messages], "completion": str, "desirable": bool}
from {"prompt": str | messages, or "messages": messages, "completion": str, "label": true | false}.

Every problem is a ValueError whose message says what is wrong and what shape was expected; data/formats.py
turns it into a `file:line: reason`.
"""

from __future__ import annotations

import re

# An HH transcript turn starts on a blank line with the speaker's name.
HH_TURN = re.compile(r"\n\n(Human|Assistant): ")
HH_ROLES = {"Human": "user", "Assistant": "assistant"}
ROLES = ("system", "user", "assistant")
TRUE_LABELS = ("true", "1", "yes", "good", "desirable", "thumbs_up", "up")
FALSE_LABELS = ("false", "0", "no", "bad", "undesirable", "thumbs_down", "down")


def preference_example(fields: dict) -> dict:
    """The canonical pair of one row, whichever accepted shape it has."""
    if "preferred_output" in fields or "non_preferred_output" in fields:
        return _openai_pair(fields)
    chosen, rejected, prompt = fields.get("chosen"), fields.get("rejected"), fields.get("prompt")
    if prompt is not None and not (isinstance(prompt, str) and not prompt.strip()):
        return {"prompt": prompt_messages(prompt, "prompt"), "chosen": _reply(chosen, "chosen"),
                "rejected": _reply(rejected, "rejected")}
    if isinstance(chosen, list) and isinstance(rejected, list):
        chosen_turns, rejected_turns = _messages(chosen, "chosen"), _messages(rejected, "rejected")
    elif isinstance(chosen, str) and isinstance(rejected, str) and is_hh_transcript(chosen):
        chosen_turns, rejected_turns = hh_turns(chosen, "chosen"), hh_turns(rejected, "rejected")
    elif isinstance(chosen, str) and isinstance(rejected, str):
        raise ValueError("no prompt: add a 'prompt' field, or give chosen and rejected as whole conversations "
                         "(message lists, or HH transcripts '\\n\\nHuman: ... \\n\\nAssistant: ...') that share "
                         "the turns before the reply")
    else:
        raise ValueError(f"'chosen' and 'rejected' must both be text or both message lists, got "
                         f"{type(chosen).__name__} and {type(rejected).__name__}")
    return _split_shared_prompt(chosen_turns, rejected_turns)


def unpaired_example(fields: dict) -> dict:
    """The canonical thumbs-up/down row: the prompt, one completion and whether it is desirable."""
    if "messages" in fields and "prompt" not in fields:
        prompt = _messages(fields["messages"], "messages")
        if prompt[-1]["role"] == "assistant":
            raise ValueError("'messages' is the conversation before the completion; it must not end with the "
                             "assistant's reply (that goes in 'completion')")
    else:
        prompt = prompt_messages(fields.get("prompt"), "prompt")
    return {"prompt": prompt, "completion": _reply(fields.get("completion"), "completion"),
            "desirable": desirable_label(fields.get("label"))}


def desirable_label(value: object) -> bool:
    """true/false (or 1/0, "good"/"bad", thumbs up/down) as a bool; anything else is an error."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in TRUE_LABELS + FALSE_LABELS:
        return value.strip().lower() in TRUE_LABELS
    raise ValueError(f"field 'label' is {value!r}; expected true (a good completion) or false (a bad one)")


def is_hh_transcript(text: str) -> bool:
    return bool(HH_TURN.match(text)) or text.startswith(("Human: ", "\nHuman: "))


def hh_turns(text: str, field: str) -> list[dict]:
    """An HH transcript as chat messages: Human turns are the user's, Assistant turns the assistant's."""
    text = "\n\n" + text.lstrip("\n")
    pieces = HH_TURN.split(text)
    if pieces[0].strip():
        raise ValueError(f"field '{field}': text before the first 'Human:' turn")
    turns = []
    for speaker, content in zip(pieces[1::2], pieces[2::2], strict=True):
        turns.append({"role": HH_ROLES[speaker], "content": content.strip()})
    if not turns or turns[-1]["role"] != "assistant":
        raise ValueError(f"field '{field}': the transcript must end with an 'Assistant:' turn (the reply)")
    return turns


def prompt_messages(prompt: object, field: str) -> list[dict]:
    """A prompt given as text (one user turn) or as messages, as a message list ending with a user turn."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise ValueError(f"field '{field}' is empty")
        if is_hh_transcript(prompt):
            pieces = HH_TURN.split("\n\n" + prompt.lstrip("\n").rstrip())
            turns = [{"role": HH_ROLES[s], "content": c.strip()} for s, c in zip(pieces[1::2], pieces[2::2],
                                                                                 strict=True)]
            if turns and turns[-1]["role"] == "assistant" and not turns[-1]["content"]:
                turns.pop()  # an HH prompt often ends with an empty "Assistant:" cue
            return _ending_with_user(turns, field)
        return [{"role": "user", "content": prompt}]
    if prompt is None:
        raise ValueError(f"missing field '{field}'")
    return _ending_with_user(_messages(prompt, field), field)


def _ending_with_user(turns: list[dict], field: str) -> list[dict]:
    if not turns or turns[-1]["role"] != "user":
        raise ValueError(f"field '{field}' must end with a user turn (the reply answers it)")
    return turns


def _reply(value: object, field: str) -> str:
    """A reply given as text, or as a list holding one assistant message (or a single message object)."""
    if isinstance(value, dict):
        value = [value]
    if isinstance(value, list):
        turns = _messages(value, field)
        if len(turns) != 1 or turns[0]["role"] != "assistant":
            raise ValueError(f"field '{field}' with a separate prompt must be the reply alone: text, or one "
                             "assistant message")
        return turns[0]["content"]
    if value is None:
        raise ValueError(f"missing field '{field}'")
    if not isinstance(value, str):
        raise ValueError(f"field '{field}' must be text or a message list, got {type(value).__name__}")
    if not value.strip():
        raise ValueError(f"field '{field}' is empty")
    return value


def _messages(value: object, field: str) -> list[dict]:
    if not isinstance(value, list) or not value:
        raise ValueError(f"field '{field}' must be a non-empty list of {{role, content}} messages")
    checked = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise ValueError(f"{field}[{index}] must be an object with 'role' and 'content'")
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ValueError(f"{field}[{index}].role is {role!r}; allowed: {', '.join(ROLES)}")
        if not isinstance(content, str) or not content.strip():
            raise ValueError(f"{field}[{index}].content must be non-empty text")
        checked.append({"role": role, "content": content})
    return checked


def _split_shared_prompt(chosen: list[dict], rejected: list[dict]) -> dict:
    """Whole conversations that differ only in the last (assistant) turn: the shared turns are the prompt."""
    for name, turns in (("chosen", chosen), ("rejected", rejected)):
        if turns[-1]["role"] != "assistant":
            raise ValueError(f"'{name}' must end with the assistant's reply")
    if chosen[:-1] != rejected[:-1]:
        raise ValueError("'chosen' and 'rejected' must share every turn before the last one (the prompt); "
                         "they differ earlier. Give the prompt separately in a 'prompt' field.")
    prompt = _ending_with_user(chosen[:-1], "the turns before the reply")
    return {"prompt": prompt, "chosen": chosen[-1]["content"], "rejected": rejected[-1]["content"]}


def _openai_pair(fields: dict) -> dict:
    source = fields.get("input")
    if not isinstance(source, dict) or "messages" not in source:
        raise ValueError("an OpenAI preference row needs 'input': {\"messages\": [...]} beside 'preferred_output' "
                         "and 'non_preferred_output'")
    return {"prompt": prompt_messages(source["messages"], "input.messages"),
            "chosen": _reply(fields.get("preferred_output"), "preferred_output"),
            "rejected": _reply(fields.get("non_preferred_output"), "non_preferred_output")}


def unpair(examples: list[dict]) -> list[dict]:
    """Pairs as KTO rows: each chosen reply a desirable completion, each rejected one an undesirable one."""
    rows = []
    for example in examples:
        rows.append({"prompt": example["prompt"], "completion": example["chosen"], "desirable": True})
        rows.append({"prompt": example["prompt"], "completion": example["rejected"], "desirable": False})
    return rows
