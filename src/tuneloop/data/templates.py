"""Chat templates: the model's own, or an explicit fallback for models that have none (base models).

`data.chat_template` chooses: "model" (the tokenizer's template; an error if it has none),
"chatml", "plain", or a Jinja template string. The chosen template is stored on the tokenizer, so
it travels with the adapter, the export and the chat command.
"""

from __future__ import annotations

from tuneloop.errors import ConfigError

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# For base models whose vocabulary has no chat tokens: plain-text turns, the reply closed by EOS.
PLAIN = (
    "{% if bos_token %}{{ bos_token }}{% endif %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### User:\n' + message['content'] + '\n\n' }}"
    "{% else %}{{ '### Assistant:\n' + message['content'] + eos_token + '\n\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Assistant:\n' }}{% endif %}"
)

BUILTIN = {"chatml": CHATML, "plain": PLAIN}


def apply_template_choice(tokenizer, choice: str, model_name: str) -> None:
    """Set tokenizer.chat_template according to data.chat_template, or raise a ConfigError that says how."""
    if choice == "model":
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(
                f"data.chat_template: the model '{model_name}' has no chat template (it is probably a base model). "
                "Set data.chat_template to 'plain' (plain-text turns, works with any vocabulary), 'chatml', "
                "or a Jinja template string; or use data.format: text for raw text."
            )
        return
    if choice in BUILTIN:
        tokenizer.chat_template = BUILTIN[choice]
    elif "{%" in choice or "{{" in choice:
        tokenizer.chat_template = choice
    else:
        raise ConfigError(
            f"data.chat_template: {choice!r} is neither 'model', 'chatml', 'plain' nor a Jinja template string."
        )
