"""One training process of a multi-process run: `python -m tuneloop.worker RUN_DIR [--resume]` (train/launch.py)."""

from __future__ import annotations

import sys
from pathlib import Path

from tuneloop.errors import TuneloopError


def main(argv: list[str]) -> int:
    from tuneloop.config.load import load_run_config
    from tuneloop.stages import train_stage
    from tuneloop.workspace import RunDir

    run = RunDir(Path(argv[0]))
    resume = "--resume" in argv[1:]
    try:
        config = load_run_config(run)
        train_stage(config, run, resume=resume, console_print=_rank_zero_print())
    except TuneloopError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
    return 0


def _rank_zero_print():
    import os

    return print if os.environ.get("RANK", "0") == "0" else (lambda *args, **kwargs: None)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
