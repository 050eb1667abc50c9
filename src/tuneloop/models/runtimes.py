"""What Ollama and vLLM need beside the weights: an Ollama Modelfile (its Go template derived from the
chat template) and the exact `vllm serve` command.

Ollama templates are Go templates, not Jinja. Rather than translate Jinja, the chat template is
rendered on marker conversations and cut into the pieces every turn-based template is made of:
what opens and closes a system, user and assistant turn, what opens the conversation when there is
no system message (a default system prompt lives there, as in SmolLM2's template), and the
generation prompt. Those literal pieces are then put into a fixed Go template. `turn_pieces`
raises when a template does not decompose this way (it then needs a hand-written TEMPLATE).
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from tuneloop.errors import TuneloopError

# Markers that no chat template alters (plain letters, no whitespace at the ends).
SYSTEM, USER, USER2, ASSISTANT = "SYSTEMMARKERX", "USERMARKERX", "USERMARKERY", "ASSISTANTMARKERX"


@dataclass(frozen=True)
class TurnPieces:
    """The literal text around each turn, as the chat template writes it."""

    opening: str  # before the first user turn when there is no system message (may hold a default system prompt)
    system_open: str  # before the system text (the conversation's opening included)
    system_close: str
    user_open: str
    user_close: str
    assistant_open: str  # the generation prompt
    assistant_close: str

    def render(self, messages: list[dict], add_generation_prompt: bool) -> str:
        """The conversation as the Go template below renders it (tests compare this with the Jinja one)."""
        system = next((m["content"] for m in messages if m["role"] == "system"), "")
        text = f"{self.system_open}{system}{self.system_close}" if system else self.opening
        for message in messages:
            if message["role"] == "user":
                text += f"{self.user_open}{message['content']}{self.user_close}"
            elif message["role"] == "assistant":
                text += f"{self.assistant_open}{message['content']}{self.assistant_close}"
        return text + (self.assistant_open if add_generation_prompt else "")


def turn_pieces(tokenizer) -> TurnPieces:
    """Cut the tokenizer's chat template into TurnPieces, or raise when it is not a turn-by-turn template."""
    def render(messages, generation=False):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)

    user = {"role": "user", "content": USER}
    assistant = {"role": "assistant", "content": ASSISTANT}
    try:
        one = render([user])
        prompt = render([user], generation=True)
        two = render([user, assistant])
        three = render([user, assistant, {"role": "user", "content": USER2}])
        with_system = render([{"role": "system", "content": SYSTEM}, user])
    except Exception as exc:  # a template may raise on a lone user turn or a system message
        raise TuneloopError(f"the chat template cannot be turned into an Ollama TEMPLATE ({exc}); write one by hand "
                            "(https://github.com/ollama/ollama/blob/main/docs/template.md).") from None
    problem = TuneloopError("the chat template does not render turn by turn (each reply appended to the previous "
                            "text), so no Ollama TEMPLATE can be derived from it; write one by hand.")
    if not (prompt.startswith(one) and two.startswith(one) and three.startswith(two)):
        raise problem
    assistant_open = prompt[len(one):]
    reply = two[len(one):]
    if not reply.startswith(assistant_open) or ASSISTANT not in reply:
        raise problem
    assistant_close = reply[len(assistant_open) + len(ASSISTANT):]
    user_turn = three[len(two):]
    user_open, _, user_close = user_turn.partition(USER2)
    if one.count(USER) != 1 or not one.endswith(USER + user_close) or not one[:one.index(USER)].endswith(user_open):
        raise problem
    opening = one[: one.index(USER) - len(user_open)]
    system_part = with_system[: with_system.index(USER) - len(user_open)]
    if SYSTEM not in system_part:
        raise TuneloopError("the chat template drops the system message, so an Ollama SYSTEM would be ignored.")
    system_open, _, system_close = system_part.partition(SYSTEM)
    pieces = TurnPieces(opening, system_open, system_close, user_open, user_close, assistant_open, assistant_close)
    check = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"},
             {"role": "assistant", "content": "A"}, {"role": "user", "content": "V"}]
    if pieces.render(check, True) != render(check, generation=True):
        raise problem
    return pieces


def go_template(pieces: TurnPieces) -> str:
    """The Ollama TEMPLATE (Go template syntax) that renders .Messages as the chat template does.

    Dashes trim only the line breaks added here for readability: every `{{-` follows a `}}` and a newline.
    """
    def literal(text: str) -> str:
        if "{{" in text or "}}" in text:
            raise TuneloopError("the chat template's literal text contains '{{' or '}}', which a Go template cannot "
                                "hold as is; write the Ollama TEMPLATE by hand.")
        return text

    return (
        '{{- $system := "" }}\n'
        '{{- range .Messages }}{{ if eq .Role "system" }}{{ $system = .Content }}{{ end }}{{ end }}\n'
        f'{{{{- if $system }}}}{literal(pieces.system_open)}{{{{ $system }}}}{literal(pieces.system_close)}'
        f'{{{{ else }}}}{literal(pieces.opening)}{{{{ end }}}}\n'
        '{{- range $i, $_ := .Messages }}\n'
        '{{- $last := eq (len (slice $.Messages $i)) 1 }}\n'
        f'{{{{- if eq .Role "user" }}}}{literal(pieces.user_open)}{{{{ .Content }}}}{literal(pieces.user_close)}'
        f'{{{{ if $last }}}}{literal(pieces.assistant_open)}{{{{ end }}}}\n'
        f'{{{{- else if eq .Role "assistant" }}}}{literal(pieces.assistant_open)}{{{{ .Content }}}}'
        f'{{{{ if not $last }}}}{literal(pieces.assistant_close)}{{{{ end }}}}\n'
        '{{- end }}\n'
        '{{- end }}'
    )


def stop_words(tokenizer, pieces: TurnPieces) -> list[str]:
    """Strings that end a reply: the EOS token and the marker that closes the assistant turn."""
    stops = []
    for candidate in (pieces.assistant_close.strip(), tokenizer.eos_token, pieces.user_open.strip()):
        if candidate and candidate not in stops:
            stops.append(candidate)
    return stops


def modelfile(gguf_name: str, tokenizer, system: str | None, adapter_name: str | None = None,
              temperature: float | None = None) -> str:
    """An Ollama Modelfile: FROM the GGUF (and ADAPTER), TEMPLATE, SYSTEM and stop parameters."""
    pieces = turn_pieces(tokenizer)
    lines = [f"FROM ./{gguf_name}"]
    if adapter_name:
        lines.append(f"ADAPTER ./{adapter_name}")
    lines.append(f'TEMPLATE """{go_template(pieces)}"""')
    if system:
        if '"""' in system:
            raise TuneloopError('the system prompt contains """, which a Modelfile cannot quote.')
        lines.append(f'SYSTEM """{system}"""')
    lines += [f'PARAMETER stop "{stop}"' for stop in stop_words(tokenizer, pieces)]
    if temperature is not None:
        lines.append(f"PARAMETER temperature {temperature:g}")
    return "\n".join(lines) + "\n"


def vllm_command(model: str, served_name: str, adapter: tuple[str, str, int] | None = None,
                 max_model_len: int | None = None) -> str:
    """The `vllm serve` command for a merged directory, or for the base with a LoRA adapter (name, path, rank)."""
    parts = ["vllm", "serve", model, "--served-model-name", served_name if adapter is None else f"{served_name}-base"]
    if adapter is not None:
        name, path, rank = adapter
        parts += ["--enable-lora", "--lora-modules", f"{name}={path}", "--max-lora-rank", str(max(8, rank))]
    if max_model_len:
        parts += ["--max-model-len", str(max_model_len)]
    parts += ["--host", "127.0.0.1", "--port", "8000"]
    return " ".join(shlex.quote(part) for part in parts)


def run_system_prompt(examples: list[dict]) -> str | None:
    """The system message every training example shares, if they share one (it becomes the Ollama SYSTEM)."""
    systems = {next((m["content"] for m in ex.get("messages", []) if m["role"] == "system"), None) for ex in examples}
    return systems.pop() if len(systems) == 1 else None


def write_serve_script(path: Path, command: str) -> None:
    from tuneloop.workspace import write_text

    write_text(path, "#!/bin/sh\n# Serve this export with vLLM (pip install vllm; a CUDA GPU). OpenAI API on :8000.\n"
               f'cd "$(dirname "$0")" && exec {command} "$@"\n')
    path.chmod(0o755)
