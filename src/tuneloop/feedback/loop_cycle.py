"""One loop cycle as a state machine — exporting → training → gating → promoting → done — saved at each step.

The loop (tuneloop.feedback.loop) saves its state before each step and after it, so a loop killed anywhere
restarts the step it was in: an export is written again from the same feedback window, a training run
starts again from the served weights (the half-trained one is removed), a gate is scored again, and a
promotion is first checked against the server (a promotion the server already took is recorded, not sent
twice). A candidate is promoted only from the promoting step, which only a finished gate reaches (its
promotion.json saying "promote"). A step that fails marks the cycle failed with the error; the served model and
the feedback window stay as they were, so the next cycle retries that feedback.

TUNELOOP_LOOP_FAULT=STEP makes the loop kill itself with SIGKILL once STEP's work is done but before that is
saved (the worst moment), STEP:start right after entering it: the fault tests' way to stop it exactly there.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from datetime import datetime, timezone
from pathlib import Path

from tuneloop.errors import TrainingInterrupted
from tuneloop.feedback.loop_lease import LeaseLost

STEPS = ("exporting", "training", "gating", "promoting")
FAULT_ENV = "TUNELOOP_LOOP_FAULT"


def now_iso() -> datetime:
    return datetime.now(timezone.utc)


def new_cycle(state: dict) -> dict:
    """The next cycle's entry, its feedback window [since, until) fixed now so a restart exports the same rows."""
    number = len(state["cycles"]) + 1
    started = now_iso().isoformat()
    entry = {"cycle": number, "started": started, "since": state.get("since"), "until": started,
             "served": state["served"], "state": "exporting", "steps": [], "resumed": 0, "decision": None,
             "reasons": [], "promoted": False}
    state["current"] = entry
    return entry


def cycle_paths(settings, entry: dict) -> tuple[Path, Path]:
    out = Path(settings.out)
    return out / f"cycle-{entry['cycle']}-feedback", out / f"cycle-{entry['cycle']}"


def fault_point(step: str, moment: str) -> None:
    wanted = os.environ.get(FAULT_ENV, "")
    if wanted and wanted == (step if moment == "end" else f"{step}:{moment}"):
        print(f"loop: {FAULT_ENV}={wanted}: killing this process (SIGKILL)", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)


def run_steps(settings, state: dict, save, console_print=print) -> dict:
    """Run the current cycle's steps from the one it is in to done (or failed); returns its entry.

    save(state) is called after every change of step; a save that raises (a lost lease) stops the cycle.
    """
    entry = state["current"]
    while entry["state"] in STEPS:
        step = entry["state"]
        fault_point(step, "start")
        began = time.monotonic()
        try:
            following = STEP_FUNCTIONS[step](settings, state, entry, console_print)
        except Exception as exc:  # noqa: BLE001 - an unattended loop records any failure and keeps serving
            if isinstance(exc, (LeaseLost, TrainingInterrupted)):
                # A lost lease, or SIGTERM/Ctrl-C during training (the trainer saves a checkpoint and stops):
                # the loop stops with this cycle still in its step, which the next start resumes.
                raise
            fail(state, entry, step, exc, console_print, Path(settings.out))
            save(state)
            return entry
        fault_point(step, "end")
        entry["steps"].append({"step": step, "seconds": round(time.monotonic() - began, 1),
                               "attempt": entry["resumed"] + 1})
        entry["state"] = following
        if following == "done":
            finish(state, entry)
        save(state)
    return entry


def fail(state: dict, entry: dict, step: str, exc: Exception, console_print, out: Path) -> None:
    error = f"{type(exc).__name__}: {exc}"
    full = disk_full_hint(out, exc)
    entry.update(state="failed", decision="failed", failed_step=step, error=error + (f" ({full})" if full else ""),
                 finished=now_iso().isoformat())
    state["cycles"].append(entry)
    state["current"] = None
    console_print(f"loop: cycle {entry['cycle']} failed while {step}: {entry['error']}. The served model stays "
                  f"({state['served']}); its feedback is kept for the next cycle.")


# Less free space than this beside a failed write: the disk is the likely cause, whatever the library said (torch
# reports a full disk while saving a checkpoint as "enforce fail at inline_container.cc ... unexpected pos").
LOW_SPACE_BYTES = 64 << 20


def disk_full_hint(out: Path, exc: BaseException) -> str | None:
    """A sentence saying the disk holding out is (nearly) full, when it is; None otherwise."""
    import errno

    chained, no_space = exc, False
    while chained is not None:
        no_space = no_space or (isinstance(chained, OSError) and chained.errno == errno.ENOSPC)
        chained = chained.__cause__ or chained.__context__
    try:
        free = shutil.disk_usage(out).free
    except OSError:
        return "No space left on device" if no_space else None
    if not no_space and free >= LOW_SPACE_BYTES:
        return None
    return (f"No space left on device: the disk holding {out} has {free / 1024:.0f} KiB free; free space there or "
            "point loop.out at a larger disk")


def finish(state: dict, entry: dict) -> None:
    entry["finished"] = now_iso().isoformat()
    if entry["decision"] == "promote":
        state["served"] = entry["candidate"]  # the next cycle starts from the model now in service
    state["since"] = entry["until"]
    state["cycles"].append(entry)
    state["current"] = None


def export_step(settings, state: dict, entry: dict, console_print) -> str:
    from tuneloop.feedback.store_export import export_store

    export_dir, candidate = cycle_paths(settings, entry)
    if export_dir.exists():  # what an interrupted export left
        shutil.rmtree(export_dir)
    summary = export_store(settings.store, export_dir, Path(entry["served"]), entry["since"], None, console_print,
                           until=entry["until"])
    entry.update(export=str(export_dir), candidate=str(candidate), feedback_rows=summary["feedback_rows"],
                 pairwise_rows=summary["pairwise_rows"])
    return "training"


def train_step(settings, state: dict, entry: dict, console_print) -> str:
    from tuneloop.feedback.retrain import train_candidate

    train_candidate(Path(entry["served"]), Path(entry["export"]), Path(entry["candidate"]), settings.recipe,
                    settings.replay_ratio, settings.holdout, overrides=settings.set, overwrite=True,
                    console_print=console_print, paraphrases=settings.paraphrases)
    return "gating"


def gate_step(settings, state: dict, entry: dict, console_print) -> str:
    from tuneloop.feedback.gate import GateRule
    from tuneloop.feedback.retrain import gate_candidate

    decision = gate_candidate(Path(entry["served"]), Path(entry["candidate"]),
                              GateRule(max_regression=settings.max_regression), console_print)
    entry.update(decision=decision["decision"], reasons=decision["reasons"], recipe=decision.get("recipe"))
    return "promoting" if decision["decision"] == "promote" and settings.server else "done"


def promote_step(settings, state: dict, entry: dict, console_print) -> str:
    from tuneloop.feedback.promote import promote, read_api_key, served_run_dir

    api_key = read_api_key(Path(settings.api_key_file)) if settings.api_key_file else None
    model = settings.model or Path(state["first"]).name
    candidate = Path(entry["candidate"]).resolve()
    serving = served_run_dir(settings.server, model, api_key)
    if serving is not None and serving.resolve() == candidate:
        # A loop killed after the server took the promotion but before saving it: record it, do not send it again.
        console_print(f"loop: {settings.server} already serves {candidate} as {model}; recording the promotion")
        entry.update(promoted=True, promoted_before_restart=True)
        return "done"
    answer = promote(candidate, settings.server, model, api_key)
    entry.update(promoted=True, version=answer.get("version"), previous_version=answer.get("previous_version"))
    return "done"


STEP_FUNCTIONS = {"exporting": export_step, "training": train_step, "gating": gate_step, "promoting": promote_step}
