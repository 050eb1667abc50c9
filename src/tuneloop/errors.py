"""Errors meant for people: each says what was wrong, where, and what to do about it.

The CLI prints these without a traceback. Anything else that escapes is a bug in tuneloop.
"""

from __future__ import annotations

GATE_FAILED_EXIT_CODE = 3
"""Exit code of `tuneloop run` and `tuneloop evaluate` when the run finished but a gate (evaluate.max_forgetting,
evaluate.safety) marked it failed: a CI job stops there, while 1 and 2 still mean the run itself could not finish."""


class TuneloopError(Exception):
    """A problem the user can fix; the message names the place and the fix."""

    exit_code = 1


class ConfigError(TuneloopError):
    """The run config (or a --set override) is invalid."""

    exit_code = 2


class DataError(TuneloopError):
    """A data file is missing, unreadable or has rows that cannot be used."""

    exit_code = 2


class ModelError(TuneloopError):
    """A model could not be found, installed, converted or loaded."""


class TrainingInterrupted(TuneloopError):
    """Training stopped by Ctrl-C or SIGTERM after saving a checkpoint; `--resume` continues it."""

    exit_code = 130
