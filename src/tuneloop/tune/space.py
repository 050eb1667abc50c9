"""The search space in Optuna's terms: `trial.suggest_*` calls, the grid sampler's points, and trial values as text.

The `search.space` block itself is parsed and checked with the config (tuneloop.config.search_space).
"""

from __future__ import annotations

import math
from typing import Any

from tuneloop.config.search_space import Param


def suggest(trial, params: list[Param]) -> dict[str, Any]:
    """Ask the trial for a value of every parameter; returns {dotted key: value}."""
    values = {}
    for p in params:
        if p.kind == "log_uniform":
            values[p.key] = trial.suggest_float(p.key, p.low, p.high, log=True)
        elif p.kind == "uniform":
            values[p.key] = trial.suggest_float(p.key, p.low, p.high, step=p.step)
        elif p.kind == "int":
            values[p.key] = trial.suggest_int(p.key, p.low, p.high, step=p.step or 1, log=p.log)
        else:
            values[p.key] = trial.suggest_categorical(p.key, list(p.choices))
    return values


def grid_points(params: list[Param]) -> dict[str, list]:
    """The grid sampler's search space: every listed value of each parameter."""
    grid = {}
    for p in params:
        if p.kind == "int":
            grid[p.key] = list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))
        elif p.kind == "choice":
            grid[p.key] = list(p.choices)
        else:
            raise ValueError(f"{p.key}: a continuous range has no grid")
    return grid


def grid_size(params: list[Param]) -> int:
    return math.prod(len(values) for values in grid_points(params).values())


def describe_values(values: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value:.3g}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in values.items())
