"""Serve fixtures: run directories holding real PEFT adapters (random, distinct weights) on the tiny Llama."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_helpers import PROMPTS, make_adapter_run


@pytest.fixture(scope="session")
def adapter_runs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Two LoRA runs on the same tiny base: 'alpha' and 'beta', with different random adapter weights."""
    root = tmp_path_factory.mktemp("runs")
    return {"alpha": make_adapter_run(root / "alpha", tiny_model_dir, 1, PROMPTS),
            "beta": make_adapter_run(root / "beta", tiny_model_dir, 2, PROMPTS)}
