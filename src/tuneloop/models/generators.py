"""Text generators for model-based work (paraphrase, back-translation, judging): a local model or an endpoint.

Both follow tuneloop.data.text_generator.TextGenerator (`generate(prompts) -> replies`): LocalGenerator runs a
local chat model, OpenAIGenerator any OpenAI-compatible /chat/completions endpoint.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tuneloop.errors import DataError, ModelError

DEFAULT_MODEL = "smollm2-135m-instruct"


class LocalGenerator:
    """A local causal LM with a chat template (registry name, HF directory or .gguf), loaded on first use.

    Decoding is greedy, so several copies of the same row come out identical (and are skipped as duplicates);
    use an OpenAI-compatible endpoint with a temperature for more than one copy per row.
    """

    def __init__(self, model: str = DEFAULT_MODEL, max_new_tokens: int = 256, batch_size: int = 8,
                 device: str = "auto") -> None:
        self.model_name = model
        self.max_new_tokens = max_new_tokens
        self.batch_size = batch_size
        self.device = device
        self._model = None
        self._tokenizer = None

    def generate(self, prompts: list[str]) -> list[str]:
        from tuneloop.models.generate import generate_replies

        model, tokenizer = self._load()
        rendered = [
            tokenizer.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                          add_generation_prompt=True)
            for prompt in prompts
        ]
        return generate_replies(model, tokenizer, rendered, self.max_new_tokens, self.batch_size, desc="generate")

    def _load(self):
        if self._model is None:
            from tuneloop.models.device import pick_device, pick_dtype
            from tuneloop.models.load import load_causal_lm, load_tokenizer
            from tuneloop.models.registry import resolve_model

            path = resolve_model(self.model_name)
            tokenizer = load_tokenizer(path)
            if not tokenizer.chat_template:
                raise ModelError(
                    f"model {self.model_name} has no chat template, so it cannot follow paraphrase or translation "
                    f"instructions. Use an instruct model such as {DEFAULT_MODEL}, or an OpenAI-compatible endpoint."
                )
            device = pick_device(self.device)
            self._model = load_causal_lm(path, pick_dtype(device), device).eval()
            self._tokenizer = tokenizer
        return self._model, self._tokenizer


class OpenAIGenerator:
    """Any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp server, Ollama): one request per prompt."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60,
                 temperature: float = 0.3) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key  # explicit only: an environment key must not leak to an arbitrary base_url
        self.timeout = timeout
        self.temperature = temperature

    def generate(self, prompts: list[str]) -> list[str]:
        return [self._complete(prompt) for prompt in prompts]

    def _complete(self, prompt: str) -> str:
        payload = {
            "model": self.model,
            "messages": [{"role": "user", "content": prompt}],
            "temperature": self.temperature,
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        response = _post_json(self.url, payload, headers, self.timeout)
        try:
            return str(response["choices"][0]["message"]["content"]).strip()
        except (KeyError, IndexError, TypeError):
            raise DataError(
                f"{self.url}: the reply is not an OpenAI chat completion (no choices[0].message.content): "
                f"{json.dumps(response)[:200]}"
            ) from None


def _post_json(url: str, payload: dict, headers: dict, timeout: float) -> dict:
    try:
        import httpx
    except ImportError:
        httpx = None
    if httpx is not None:
        try:
            response = httpx.post(url, json=payload, headers=headers, timeout=timeout)
        except httpx.TransportError as exc:
            raise _unreachable(url, exc) from None
        status, body = response.status_code, response.text
    else:
        request = urllib.request.Request(url, data=json.dumps(payload).encode("utf-8"), headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as reply:
                status, body = reply.status, reply.read().decode("utf-8", errors="replace")
        except urllib.error.HTTPError as exc:
            status, body = exc.code, exc.read().decode("utf-8", errors="replace")
        except (urllib.error.URLError, OSError) as exc:
            raise _unreachable(url, getattr(exc, "reason", exc)) from None
    if status >= 400:
        raise DataError(f"{url}: the endpoint answered HTTP {status}: {body[:200]}")
    try:
        return json.loads(body)
    except json.JSONDecodeError:
        raise DataError(f"{url}: the endpoint did not answer with JSON: {body[:200]}") from None


def _unreachable(url: str, reason: object) -> DataError:
    return DataError(f"could not reach the generation endpoint {url} ({reason}). Check the base URL and that the "
                     "server is running.")
