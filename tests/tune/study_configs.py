"""The search tests' config: a study on the tiny Llama (tests/conftest.py) that trains 3 steps per trial."""

from __future__ import annotations

import copy
from pathlib import Path


def study_raw(tiny_config: dict, tmp_path: Path) -> dict:
    """A raw config with a search block: 3 steps per trial, an evaluation after every step, no checkpoints."""
    raw = copy.deepcopy(tiny_config)
    raw["output_dir"] = str(tmp_path / "study")
    raw["data"]["audit"] = {"enabled": False}  # the audit has its own tests; trials here stay fast
    raw["train"].update(max_steps=3, eval_every=1, save_every=1000, early_stopping_patience=None,
                        trim_memory_every=None, learning_rate=1e-3, warmup_ratio=0.0)
    raw["evaluate"].update(max_new_tokens=4, intervals=False)
    raw["search"] = {
        "trials": 3,
        "sampler": "random",
        "pruner": "none",
        "heartbeat": 1,
        "space": {"train.learning_rate": {"log_uniform": [1.0e-4, 1.0e-2]}},
    }
    return raw
