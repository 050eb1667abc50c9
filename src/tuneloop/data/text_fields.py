"""The text of a canonical example, as the data checks see it: all of it, or only the input side; and its labels."""

from __future__ import annotations

from tuneloop.data.openai_chat import message_text


def example_text(example: dict) -> str:
    """Everything a person wrote in the example (system prompts excluded: they repeat across rows)."""
    if "messages" in example:
        return "\n".join(message_text(m) for m in example["messages"] if m["role"] != "system")
    if "chosen" in example:
        return "\n".join(part for part in (prompt_words(example.get("prompt")), example["chosen"]) if part)
    if "completion" in example:  # an unpaired (KTO) row
        return "\n".join(part for part in (prompt_words(example.get("prompt")), example["completion"]) if part)
    if isinstance(example.get("prompt"), list):  # prompt_only: the conversation so far
        return "\n".join(m["content"] for m in example["prompt"] if m["role"] != "system")
    if "tokens" in example:
        return " ".join(example["tokens"])
    return example["text"]


def input_text(example: dict) -> str:
    """What the model is given (the prompt side): a test row whose input is in train has leaked."""
    if "messages" in example:
        turns = [message_text(m) for m in example["messages"][:-1] if m["role"] != "system"]
        return "\n".join(turns)
    if "chosen" in example or "completion" in example:
        return prompt_words(example.get("prompt")) or example.get("chosen") or example["completion"]
    if isinstance(example.get("prompt"), list):  # prompt_only: all of it is input
        return "\n".join(m["content"] for m in example["prompt"] if m["role"] != "system")
    if "tokens" in example:
        return " ".join(example["tokens"])
    return example["text"]


def prompt_words(prompt: str | list[dict] | None) -> str:
    """A preference row's prompt as text: the words of its turns (system turns left out)."""
    if isinstance(prompt, list):
        return "\n".join(m["content"] for m in prompt if m["role"] != "system")
    return prompt or ""


def label_of(example: dict) -> str | None:
    """The label of a classification example (multi-label rows joined with '|'), else None."""
    label = example.get("label")
    if label is None:
        return None
    return "|".join(label) if isinstance(label, list) else label


def labels_of(example: dict) -> list[str | None]:
    """What a row adds to the label counts: its label (as label_of gives it; None for unlabelled rows), or
    for token classification one entity type per entity it mentions (none for a row without entities)."""
    if "tags" in example:
        from tuneloop.data.iob import entity_types

        return entity_types(example["tags"])
    return [label_of(example)]
