"""`python -m tuneloop.ui.worker JOB_DIR`: run a UI job's commands in order, writing status.json as they go.

Started by tuneloop.ui.jobs in a session of its own. SIGINT (the UI's Stop) reaches the whole process group:
the running command handles it (training saves a checkpoint and exits) and the worker records "stopped". A run
that its gates marked failed (exit code GATE_FAILED_EXIT_CODE) is recorded "finished", not as a crash.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from tuneloop.errors import GATE_FAILED_EXIT_CODE
from tuneloop.workspace import read_json, write_json


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def main(root: Path) -> int:
    spec = read_json(root / "job.json")
    stopped = False

    def on_interrupt(signum, frame):
        nonlocal stopped
        stopped = True  # the child got the same signal from the process group; wait for it to finish cleanly

    signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGTERM, on_interrupt)
    write_json(root / "status.json", {"state": "running", "command": 0})
    returncode = 0
    with (root / "log.txt").open("ab") as log:
        for index, command in enumerate(spec["commands"]):
            write_json(root / "status.json", {"state": "running", "command": index})
            log.write(f"$ {' '.join(command)}\n".encode())
            log.flush()
            child = subprocess.Popen(command, cwd=spec.get("cwd"), stdout=log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
            while True:
                try:
                    returncode = child.wait()
                    break
                except InterruptedError:
                    continue
            if stopped or returncode != 0:
                break
    # A run whose gates failed did finish (its page shows "failed checks"); later commands still do not start.
    finished = returncode in (0, GATE_FAILED_EXIT_CODE)
    state = "stopped" if stopped else ("finished" if finished else "failed")
    write_json(root / "status.json", {"state": state, "returncode": returncode, "finished_at": _now()})
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
