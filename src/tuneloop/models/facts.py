"""What a model is, read without loading it: its kind (causal LM, encoder, encoder-decoder) and parameter count.

The defaults table (tuneloop.train.defaults) is keyed by these. The kind comes from the model's config.json
(tuneloop.models.load); the count from the tensor shapes in its safetensors headers, which is exact and reads
a few kilobytes. A model known only by a hub id that is not on this machine has an unknown kind and count,
and the caller falls back to the generic defaults.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from tuneloop.errors import ModelError

KINDS = ("causal-lm", "encoder", "encoder-decoder")


@dataclass(frozen=True)
class ModelFacts:
    kind: str  # one of KINDS, or "unknown"
    parameters: int | None
    unknown_because: str | None = None

    def describe(self) -> str:
        """'a 22M encoder', 'a 135M causal LM', 'a model of unknown kind'."""
        if self.kind == "unknown":
            return "a model of unknown kind"
        size = f"{human_count(self.parameters)} " if self.parameters else ""
        return f"a {size}{self.kind.replace('-lm', ' LM')}"


def human_count(parameters: int | None) -> str:
    if not parameters:
        return "?"
    if parameters >= 1e9:
        return f"{parameters / 1e9:.1f}B".replace(".0B", "B")
    if parameters < 1e6:
        return f"{round(parameters / 1e3)}K"
    return f"{round(parameters / 1e6)}M"


def model_facts(path: str) -> ModelFacts:
    """The facts of a resolved model (a local directory or a hub id); unknown when they cannot be read here."""
    from tuneloop.models.load import is_causal_lm, is_encoder_decoder

    directory = Path(path)
    if not (directory / "config.json").is_file():
        return ModelFacts("unknown", None, f"{path} is not a model directory on this machine")
    try:
        if is_encoder_decoder(path):
            kind = "encoder-decoder"
        elif is_causal_lm(path):
            kind = "causal-lm"
        else:
            kind = "encoder"
    except (ModelError, ValueError, KeyError) as exc:  # an architecture this transformers does not know
        return ModelFacts("unknown", None, f"its config.json names no architecture transformers knows ({exc})")
    return ModelFacts(kind, parameter_count(directory))


def parameter_count(directory: Path) -> int | None:
    """The number of parameters in the directory's safetensors files (None when it holds none)."""
    from safetensors import safe_open

    files = sorted(directory.glob("*.safetensors"))
    if not files:
        return None
    total = 0
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                total += math.prod(handle.get_slice(name).get_shape())
    return total
