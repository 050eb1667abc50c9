"""A served run's weights: read_run reads a run directory into a RunWeights, or says why it cannot be served."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


@dataclass
class RunWeights:
    """Where a run's weights are and how to load them (read from the run directory by read_run)."""

    run_dir: Path
    base: str
    adapter: Path | None
    full_model: Path | None
    dtype: torch.dtype
    device: str


def read_run(run_dir: Path, device: str | None = None, dtype: str | None = None):
    """The run's weights (adapter or full model), its base model, dtype and device, or a clear error."""
    from tuneloop.config.load import load_run_config
    from tuneloop.errors import TuneloopError
    from tuneloop.models.device import pick_device, pick_dtype
    from tuneloop.models.load import is_encoder_decoder
    from tuneloop.models.registry import resolve_model
    from tuneloop.workspace import open_run_dir

    run = open_run_dir(run_dir)
    config = load_run_config(run)
    if run.data_format() in ("classification", "token_classification"):
        raise TuneloopError(f"{run_dir} is a {run.data_format()} run: it labels text rather than writing replies, "
                            "so it cannot be served over the chat API. Use `tuneloop chat RUN --prompt TEXT`.")
    weights = run.trained_weights()
    if weights is None:
        raise TuneloopError(f"{run_dir}: no trained adapter or model yet. Train it first: "
                            f"`tuneloop run {run.config}`.")
    base = resolve_model(config.model.name)
    if is_encoder_decoder(base if weights == run.adapter else str(weights)):
        raise TuneloopError(f"{run_dir}: encoder-decoder models (T5, BART) are not served in-process yet; "
                            "export it (`tuneloop export RUN --merge`) and serve it with --engine URL.")
    chosen_device = pick_device(device or config.model.device)
    return RunWeights(run_dir=run_dir, base=base, adapter=weights if weights == run.adapter else None,
                      full_model=weights if weights == run.model else None,
                      dtype=pick_dtype(chosen_device, dtype or config.model.dtype), device=chosen_device)
