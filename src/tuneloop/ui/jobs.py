"""Long work the UI starts (a training run, a resume, an export, a retrain) as detached processes it can stop.

Each job is a folder WORKSPACE/.tuneloop-ui/jobs/ID/ holding job.json (what to run, for which run directory,
the worker's pid; written by the UI), status.json (running / finished / failed / stopped, written by the
worker) and log.txt (every command's output). The worker (tuneloop.ui.worker) runs in its own session, so a
UI restart or a closed browser loses no run; Stop sends SIGINT to the worker's process group, which the
training loop turns into "save a checkpoint and stop", and Resume starts `tuneloop run --resume`.
The job files live beside the runs rather than inside them because `tuneloop run` refuses a non-empty
output_dir that is not yet a run.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tuneloop.errors import TuneloopError
from tuneloop.workspace import read_json, write_json

UI_DIR = ".tuneloop-ui"
FINAL_STATES = ("finished", "failed", "stopped", "interrupted")


def ui_dir(workspace: Path) -> Path:
    return workspace / UI_DIR


def tuneloop_command(*args: str) -> list[str]:
    """The tuneloop CLI as this Python runs it (the UI's own environment and source)."""
    return [sys.executable, "-m", "tuneloop.cli", *args]


@dataclass
class Job:
    root: Path
    kind: str
    title: str
    commands: list[list[str]]
    run_dir: str | None
    pid: int | None
    started_at: str
    state: str
    returncode: int | None = None
    finished_at: str | None = None

    @property
    def id(self) -> str:
        return self.root.name

    @property
    def log(self) -> Path:
        return self.root / "log.txt"

    @property
    def running(self) -> bool:
        return self.state in ("starting", "running")

    def log_tail(self, chars: int = 4000) -> str:
        if not self.log.is_file():
            return ""
        with self.log.open("rb") as handle:
            handle.seek(max(0, self.log.stat().st_size - chars))
            return handle.read().decode("utf-8", "replace")

    def failure(self) -> str | None:
        """What went wrong, in the words the CLI printed (its `error: ...` line), or the last line of a crash."""
        if self.state not in ("failed", "interrupted"):
            return None
        if self.state == "interrupted":
            return "The job's process ended without reporting (the machine restarted or it was killed)."
        lines = [line.strip() for line in re.split(r"[\r\n]+", self.log_tail(20000)) if line.strip()]
        errors = [i for i, line in enumerate(lines) if line.startswith("error: ")]
        if errors:  # the CLI's message may run over several lines (a list of config problems)
            start = errors[-1]
            return "\n".join(lines[start:start + 12]).removeprefix("error: ")
        last = lines[-1] if lines else "no output"
        return f"The process crashed (exit code {self.returncode}): {last}. The full log is below."

    def progress(self) -> tuple[int, int, float | None] | None:
        """(step, total, seconds left) from the training bar's last update in the log, when the job trains."""
        found = re.findall(r"train:\s*\d+%\|[^|]*\|\s*(\d+)/(\d+) \[[\d:]+<([\d:?]+)", self.log_tail(6000))
        if not found:
            return None
        step, total, left = found[-1]
        parts = [int(p) for p in left.split(":")] if "?" not in left else None
        seconds = sum(value * 60 ** i for i, value in enumerate(reversed(parts))) if parts else None
        return int(step), int(total), seconds


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a finished child of this process stays a zombie until reaped
        finished, _ = os.waitpid(pid, os.WNOHANG)
        return finished == 0
    except ChildProcessError:
        return True


def read_job(root: Path) -> Job:
    spec = read_json(root / "job.json")
    status = read_json(root / "status.json") if (root / "status.json").is_file() else {"state": "starting"}
    state = status["state"]
    if state in ("starting", "running") and not _alive(spec.get("pid")):
        # The worker may have just exited between our two reads; read the status again before calling it lost.
        status = read_json(root / "status.json") if (root / "status.json").is_file() else status
        state = status["state"]
        if state in ("starting", "running") and time.time() - (root / "job.json").stat().st_mtime > 10:
            state = "interrupted"
    return Job(root, spec["kind"], spec["title"], spec["commands"], spec.get("run_dir"), spec.get("pid"),
               spec["started_at"], state, status.get("returncode"), status.get("finished_at"))


def list_jobs(workspace: Path) -> list[Job]:
    """Every job in the workspace, newest first."""
    folder = ui_dir(workspace) / "jobs"
    if not folder.is_dir():
        return []
    jobs = [read_job(path) for path in folder.iterdir() if (path / "job.json").is_file()]
    return sorted(jobs, key=lambda job: (job.started_at, job.id), reverse=True)


def latest_job(workspace: Path, run_dir: Path, kinds: tuple[str, ...] = ("run", "resume")) -> Job | None:
    target = str(run_dir.resolve())
    return next((job for job in list_jobs(workspace) if job.run_dir == target and job.kind in kinds), None)


def start_job(workspace: Path, kind: str, title: str, commands: list[list[str]], run_dir: Path | None = None) -> Job:
    """Start the commands, one after another, in a detached worker process; returns at once."""
    if run_dir is not None:
        busy = latest_job(workspace, run_dir, ("run", "resume", "export"))
        if busy is not None and busy.running:
            raise TuneloopError(f"{run_dir.name} already has a {busy.kind} job running; stop it first.")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    root = ui_dir(workspace) / "jobs" / f"{stamp}-{kind}-{secrets.token_hex(3)}"
    root.mkdir(parents=True)
    spec = {"kind": kind, "title": title, "commands": commands, "started_at": _now(),
            "run_dir": str(run_dir.resolve()) if run_dir is not None else None, "cwd": str(Path.cwd())}
    write_json(root / "job.json", spec)
    with open(os.devnull, "rb") as stdin:
        process = subprocess.Popen([sys.executable, "-m", "tuneloop.ui.worker", str(root)], stdin=stdin,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    write_json(root / "job.json", {**spec, "pid": process.pid})
    return read_job(root)


def stop_job(job: Job) -> None:
    """Ask the job to stop: SIGINT to its process group (training saves a checkpoint, then exits)."""
    if not job.running or not job.pid:
        raise TuneloopError(f"job {job.id} is not running ({job.state}); nothing to stop.")
    try:
        os.killpg(job.pid, signal.SIGINT)
    except ProcessLookupError:
        pass
