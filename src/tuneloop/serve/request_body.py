"""A request's body: a JSON object read up to the byte limit and validated into a pydantic model, or a 4xx.

Every POST route reads its body through read_json and parse, so bad input is always OpenAI's error JSON with a
message that says what to change.
"""

from __future__ import annotations

import json

from fastapi import Request
from pydantic import ValidationError

from tuneloop.serve.protocol import APIError


def body_too_large(max_body_bytes: int) -> APIError:
    return APIError(413, f"the request body is larger than {max_body_bytes} bytes (--max-body-bytes); "
                    "send a shorter prompt", code="request_too_large")


async def read_json(request: Request, max_body_bytes: int) -> dict:
    """The body as a JSON object, read up to the byte limit (also for bodies sent without Content-Length)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > max_body_bytes:
            raise body_too_large(max_body_bytes)
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise APIError(400, f"the request body is not valid JSON ({exc}); send a JSON object",
                       code="invalid_json") from None
    if not isinstance(payload, dict):
        raise APIError(400, "the request body must be a JSON object, e.g. {\"model\": ..., \"messages\": [...]}",
                       code="invalid_json")
    return payload


def parse(model, payload: dict):
    """The pydantic model of the payload, or a 400 that names the first wrong field and what it must be."""
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        message = first["msg"].removeprefix("Value error, ")
        more = f" (and {len(exc.errors()) - 1} more problems)" if len(exc.errors()) > 1 else ""
        raise APIError(400, f"{param}: {message}{more}" if param else message + more, param) from None
