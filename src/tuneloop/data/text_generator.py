"""The TextGenerator protocol: what data augmentation and the judge call for replies, a local model or an endpoint.

tuneloop.models.generators has both (LocalGenerator, OpenAIGenerator); anything with the method will do.
"""

from __future__ import annotations

from typing import Protocol


class TextGenerator(Protocol):
    """Anything that answers a list of prompts with one reply each, in order."""

    def generate(self, prompts: list[str]) -> list[str]: ...
