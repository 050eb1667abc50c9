"""`tuneloop loop CONFIG`: the whole cycle unattended — wait for feedback, export, retrain, gate, promote, repeat.

A loop config names the served run, the store the server writes and the server to promote to:

    loop:
      run: runs/quickstart             # the run in service when the loop starts
      store: runs/serve.db             # tuneloop serve --store
      server: http://127.0.0.1:8000    # promote here (omit to gate only)
      model: quickstart                # the model id on the server (default: the run directory's name)
      min_feedback: 100                # a cycle starts when this many new feedback rows arrived ...
      every: 3600                      # ... checked this often (seconds)
      cycles: null                     # stop after this many cycles (null: run until stopped)
      recipe: auto                     # sft | dpo | kto | auto
      replay_ratio: 1.0
      holdout: 0.2
      max_regression: 2.0
      set: []                          # --set overrides for the retrained runs, e.g. train.epochs=4
      out: runs/loop                   # each cycle's run lands in out/cycle-N
      name: null                       # the loop's name in the store (default: the model id)
      lease: 120                       # seconds without a heartbeat before another loop may take over
      max_failures: 3                  # stop after this many failed cycles in a row

The loop is meant to run for weeks in the foreground (under systemd, or `--once` from cron): its state — the run
in service, the feedback window read so far, every cycle with the step it is in — lives in the store's `loops`
table under the loop's name, saved before and after every step (tuneloop.feedback.loop_cycle), and is mirrored
to out/loop.json and out/loop.html for people. A lease in the same row (tuneloop.feedback.loop_lease) keeps two
loops of one name from running a cycle side by side; a loop killed at any step resumes that step when it starts
again, and never promotes a candidate whose gate did not finish.
"""

from __future__ import annotations

import html
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuneloop.errors import ConfigError, TuneloopError
from tuneloop.workspace import read_json, write_json, write_text


class LoopSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: str = Field(..., description="The run in service when the loop starts.")
    store: str = Field(..., description="The serve store: a SQLite file or a SQLAlchemy URL.")
    server: str | None = Field(None, description="The tuneloop server to promote to; omit to gate only.")
    model: str | None = Field(None, description="The model id on the server (default: the run directory's name).")
    api_key_file: str | None = None
    # 100 at holdout 0.2: a slice of 20 held-out rows, the fewest the gate judges (gate.MIN_FEEDBACK_ROWS).
    min_feedback: int = Field(100, ge=1)
    every: float = Field(3600, gt=0, description="Seconds between checks for new feedback.")
    cycles: int | None = Field(None, ge=1)
    recipe: Literal["auto", "sft", "dpo", "kto"] = "auto"
    replay_ratio: float = Field(1.0, ge=0)
    holdout: float = Field(0.2, ge=0, lt=0.9)
    paraphrases: int = Field(4, ge=0, description="sft: rewordings of each correction's question trained on too.")
    max_regression: float = Field(2.0, ge=0)
    set: list[str] = Field(default_factory=list)
    out: str = "runs/loop"
    name: str | None = Field(None, description="The loop's name in the store (its lease and state); default: the "
                                               "model id, else the run directory's name.")
    lease: float = Field(120, ge=5, description="Seconds without a heartbeat after which another loop may take "
                                                "this one's lease over.")
    max_failures: int = Field(3, ge=1, description="Stop after this many failed cycles in a row.")


def load_loop_config(path: Path) -> LoopSettings:
    from tuneloop.config.load import raise_problems
    from tuneloop.config.schema import describe_error

    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such loop config.")
    raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    if not isinstance(raw, dict) or "loop" not in raw:
        raise ConfigError(f"{path}: a loop config has one top-level section, loop: (see examples/loop.yaml).")
    try:
        return LoopSettings.model_validate(raw["loop"])
    except ValidationError as exc:
        raise_problems([describe_error(err, "loop.") for err in exc.errors()], str(path))


def count_feedback(store_url: str, since: datetime | None) -> int:
    from tuneloop.serve.store import read_tables

    _, feedback = read_tables(store_url, since)
    return len(feedback)


def slice_warning(settings: LoopSettings) -> str | None:
    """A sentence when a cycle on min_feedback rows would hold out fewer rows than the gate judges; else None."""
    import math

    from tuneloop.feedback.gate import MIN_FEEDBACK_ROWS

    held_out = math.floor(settings.min_feedback * settings.holdout)
    if held_out >= MIN_FEEDBACK_ROWS:
        return None
    enough = math.ceil(MIN_FEEDBACK_ROWS / settings.holdout) if settings.holdout else None
    fix = (f"set min_feedback to at least {enough} (or raise holdout)" if enough
           else "set holdout above 0 so the gate has feedback to judge")
    return (f"loop: min_feedback {settings.min_feedback} at holdout {settings.holdout:g} holds out at most "
            f"{held_out} feedback prompt(s) per cycle (fewer when users repeat a prompt), fewer than the "
            f"{MIN_FEEDBACK_ROWS} the gate needs to judge a gain, so a cycle on that little feedback is rejected as "
            f"too small to judge; {fix}.")


def fresh_state(settings: LoopSettings) -> dict:
    return {"name": loop_name(settings), "first": settings.run, "served": settings.run, "since": None, "cycles": [],
            "current": None, "status": None}


def loop_name(settings: LoopSettings) -> str:
    return settings.name or settings.model or Path(settings.run).name


def run_cycle(settings: LoopSettings, state: dict, console_print=print, save=None) -> dict:
    """One whole cycle on an in-memory state (save(state) after each step when given); raises when it fails.

    What the loop demo and the retrain benchmark drive; `run_loop` adds the store's lease and resuming.
    """
    from tuneloop.feedback.loop_cycle import new_cycle, run_steps

    state.setdefault("current", None)
    new_cycle(state)
    entry = run_steps(settings, state, save or (lambda _state: None), console_print)
    if entry["state"] == "failed":
        raise TuneloopError(f"loop cycle {entry['cycle']} failed while {entry['failed_step']}: {entry['error']}")
    return entry


class LoopMirror:
    """out/loop.json and out/loop.html, rewritten after every save; a full disk is said once, never fatal."""

    def __init__(self, out: Path, console_print=print):
        self.out, self.say, self.failing = out, console_print, False

    def write(self, state: dict) -> None:
        try:
            write_json(self.out / "loop.json", state)
            write_text(self.out / "loop.html", loop_page(state))
            self.failing = False
        except OSError as exc:
            if not self.failing:
                self.say(f"loop: cannot write {self.out}/loop.json and loop.html ({exc}); the state is safe in the "
                         "store and the pages are written again once the disk allows")
            self.failing = True


def run_loop(settings: LoopSettings, console_print=print, sleep=time.sleep, once: bool = False) -> dict:
    """Cycle whenever min_feedback new rows arrived, checking every `every` seconds, up to `cycles` cycles.

    once: check once (resuming an interrupted cycle first), run at most one cycle, and return (for cron).
    A loop of the same name holding the lease makes this one wait (once: return) instead of running beside it.
    """
    from tuneloop.feedback.loop_cycle import new_cycle, run_steps
    from tuneloop.feedback.loop_lease import LeaseHeld, LoopLease
    from tuneloop.feedback.store_export import store_url_of

    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    url = store_url_of(settings.store)
    mirror = LoopMirror(out, console_print)
    warning = slice_warning(settings)
    if warning:
        console_print(warning)
    lease = LoopLease(url, loop_name(settings), settings.lease, console_print)
    while True:
        try:
            saved = lease.acquire()
            break
        except LeaseHeld as exc:
            if once:
                console_print(f"loop: {exc}")
                return {**fresh_state(settings), "held_by_another": True, "ran": []}
            console_print(f"loop: {exc} Checking again in {settings.every:g}s.")
            sleep(settings.every)
    try:
        state = saved or _legacy_state(out) or fresh_state(settings)
        state.setdefault("current", None)

        def save(current: dict) -> None:
            lease.save(current)
            mirror.write(current)

        failures = 0
        ran: list[dict] = []  # the cycles this call ran (returned beside the state, not saved)
        while True:
            if state["current"]:
                entry = state["current"]
                entry["resumed"] += 1
                console_print(f"loop: resuming cycle {entry['cycle']} at {entry['state']} (the loop stopped there)")
                save(state)
            else:
                done = sum(1 for entry in state["cycles"] if entry["state"] == "done")
                if settings.cycles is not None and done >= settings.cycles:
                    break
                since = datetime.fromisoformat(state["since"]) if state.get("since") else None
                waiting = count_feedback(url, since)
                state["status"] = {"state": "collecting", "waiting": waiting, "checked": datetime.now(
                    timezone.utc).isoformat()}
                if waiting < settings.min_feedback:
                    save(state)
                    console_print(f"loop: {waiting} new feedback row(s), waiting for {settings.min_feedback}"
                                  + ("" if once else f"; next check in {settings.every:g}s"))
                    if once:
                        break
                    sleep(settings.every)
                    continue
                entry = new_cycle(state)
                save(state)
                console_print(f"loop: cycle {entry['cycle']} on {waiting} new feedback row(s)")
            entry = run_steps(settings, state, save, console_print)
            ran.append(entry)
            if entry["state"] == "failed":
                failures += 1
                if failures >= settings.max_failures:
                    raise TuneloopError(f"loop: {failures} cycles in a row failed; the last: {entry['error']}. The "
                                        f"served model stays ({state['served']}). Fix the cause and start the loop "
                                        "again.")
            else:
                failures = 0
                console_print(f"loop: cycle {entry['cycle']}: {entry['decision']}"
                              + (" and promoted" if entry["promoted"] else ""))
            if once:
                break
            if entry["state"] == "failed":
                sleep(settings.every)
        return {**state, "ran": ran}
    finally:
        lease.release()


def _legacy_state(out: Path) -> dict | None:
    """out/loop.json from a loop that kept its state only there (before the store held it)."""
    path = out / "loop.json"
    if not path.is_file():
        return None
    state = read_json(path)
    for entry in state.get("cycles", []):
        entry.setdefault("state", "done")  # that loop recorded only finished cycles
    return state


def loop_page(state: dict) -> str:
    """out/loop.html: one row per cycle — done, failed or in progress — with its steps, resumes and decision."""
    entries = list(state["cycles"]) + ([state["current"]] if state.get("current") else [])
    rows = []
    for entry in entries:
        candidate = entry.get("candidate") or ""
        report = f"<a href='{html.escape(Path(candidate).name)}/report.html'>{html.escape(candidate)}</a>" \
            if candidate and entry["state"] == "done" else html.escape(candidate)
        previous = f"<a href='#cycle-{entry['cycle'] - 1}'>cycle {entry['cycle'] - 1}</a>" if entry["cycle"] > 1 \
            else html.escape(entry["served"])
        if entry["state"] == "failed":
            outcome = f"failed while {html.escape(entry.get('failed_step', '?'))}"
            why = html.escape(entry.get("error", ""))
        elif entry["state"] == "done":
            outcome = html.escape(str(entry["decision"])) + (" (promoted)" if entry["promoted"] else "")
            why = html.escape("; ".join(entry["reasons"]))
        else:
            outcome, why = f"in progress: {html.escape(entry['state'])}", ""
        steps = ", ".join(f"{html.escape(step['step'])} {step['seconds']:g}s" for step in entry.get("steps", []))
        resumed = f"{entry.get('resumed', 0)}" if entry.get("resumed") else ""
        rows.append(f"<tr id='cycle-{entry['cycle']}' class='{html.escape(entry['state'])}'><td>{entry['cycle']}</td>"
                    f"<td>{html.escape(entry['started'])}</td><td>{previous}</td><td>{report}</td><td>{outcome}</td>"
                    f"<td>{why}</td><td>{steps}</td><td>{resumed}</td></tr>")
    status = state.get("status") or {}
    waiting = (f"<p>Collecting: {status['waiting']} new feedback row(s) at {html.escape(status['checked'])}.</p>"
               if status.get("state") == "collecting" and not state.get("current") else "")
    return ("<!doctype html><meta charset='utf-8'><title>tuneloop loop</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px 8px}"
            "table{border-collapse:collapse}tr.failed td{background:#fde8e8}</style><h1>Feedback loop</h1>"
            f"<p>In service now: {html.escape(state['served'])}</p>{waiting}<table><tr><th>cycle</th><th>started</th>"
            "<th>started from</th><th>run</th><th>outcome</th><th>why</th><th>steps</th><th>resumed</th></tr>"
            + "".join(rows) + "</table>")
