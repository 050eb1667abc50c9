"""The OpenAI wire format: pydantic request and response models, feedback, and the error shape."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class APIError(Exception):
    """An error answered in OpenAI's shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.headers = headers or {}  # e.g. Retry-After on a 503
        self.kind = kind or {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error",
                             429: "rate_limit_error"}.get(status, "invalid_request_error" if status < 500
                                                          else "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


class _Lenient(BaseModel):
    # Clients send fields we do not use (frequency_penalty, metadata, ...); OpenAI's own server accepts them too.
    model_config = ConfigDict(extra="ignore")


class TextPart(_Lenient):
    type: Literal["text"]
    text: str


class ChatMessage(_Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class SamplingFields(_Lenient):
    """What both generation endpoints share."""

    model: str = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    user: str | None = None
    stream: bool = False
    stream_options: dict | None = None
    n: int = 1

    @field_validator("n")
    @classmethod
    def _one_choice(cls, value: int) -> int:
        if value != 1:
            raise ValueError("only n=1 is supported; send several requests for several replies")
        return value

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, value):
        stops = [value] if isinstance(value, str) else list(value or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop sequences")
        if any(not s for s in stops):
            raise ValueError("stop sequences must not be empty strings")
        return stops

    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = None

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, value):
        if value:
            raise ValueError("logprobs are not supported by tuneloop serve; leave logprobs out")
        return value

    @model_validator(mode="after")
    def _one_limit(self):
        if self.max_tokens is None and self.max_completion_tokens is not None:
            self.max_tokens = self.max_completion_tokens
        return self


class CompletionRequest(SamplingFields):
    prompt: str | list[str]
    echo: bool = False

    @field_validator("prompt")
    @classmethod
    def _one_prompt(cls, value):
        if isinstance(value, list):
            if len(value) != 1:
                raise ValueError("send one prompt per request (a string, or a list of exactly one string)")
            value = value[0]
        return value

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, value):
        if value:
            raise ValueError("echo is not supported; leave it out")
        return value


class FeedbackRequest(_Lenient):
    """A rating of one reply ({id, rating, correction?, comment?}), or a preference ({id_a, id_b, preferred})."""

    id: str | None = None
    rating: Literal["up", "down"] | int | None = None
    correction: str | None = None
    comment: str | None = None
    id_a: str | None = None
    id_b: str | None = None
    preferred: str | None = None
    user: str | None = None

    @model_validator(mode="after")
    def _one_form(self):
        pairwise = self.id_a is not None or self.id_b is not None
        if pairwise:
            if not (self.id_a and self.id_b and self.preferred):
                raise ValueError("pairwise feedback needs id_a, id_b and preferred ('a', 'b', 'tie' or one of the "
                                 "ids)")
            if self.preferred not in ("a", "b", "tie", self.id_a, self.id_b):
                raise ValueError(f"preferred must be 'a', 'b', 'tie', {self.id_a!r} or {self.id_b!r}")
            if self.id is not None or self.rating is not None:
                raise ValueError("send either {id, rating} or {id_a, id_b, preferred}, not both")
            return self
        if not self.id:
            raise ValueError("feedback needs the response id ('id', e.g. chatcmpl-...) or id_a/id_b for a pairwise one")
        if self.rating is None and self.correction is None and self.comment is None:
            raise ValueError("feedback needs a rating ('up', 'down' or 1-5), a correction or a comment")
        if isinstance(self.rating, int) and not 1 <= self.rating <= 5:
            raise ValueError("rating must be 'up', 'down' or an integer from 1 to 5")
        return self

    def score(self) -> float | None:
        """The rating on [0, 1]: up 1, down 0, 1-5 stars as (n - 1) / 4."""
        if self.rating is None:
            return None
        if self.rating == "up":
            return 1.0
        if self.rating == "down":
            return 0.0
        return (int(self.rating) - 1) / 4

    def preferred_id(self) -> str | None:
        return {"a": self.id_a, "b": self.id_b, "tie": None}.get(self.preferred, self.preferred)


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletionResponse(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class DeltaMessage(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: DeltaMessage
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None


class CompletionChoice(BaseModel):
    index: int = 0
    text: str
    finish_reason: str | None = None
    logprobs: None = None


class CompletionResponse(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int = Field(default_factory=lambda: int(time.time()))
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tuneloop"
    parent: str | None = None
    root: str | None = None


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]
