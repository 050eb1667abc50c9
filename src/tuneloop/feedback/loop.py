"""`tuneloop loop CONFIG`: the whole cycle unattended — wait for feedback, export, retrain, gate, promote, repeat.

A loop config names the served run, the store the server writes and the server to promote to:

    loop:
      run: runs/quickstart             # the run in service when the loop starts
      store: runs/serve.db             # tuneloop serve --store
      server: http://127.0.0.1:8000    # promote here (omit to gate only)
      model: quickstart                # the model id on the server (default: the run directory's name)
      min_feedback: 50                 # a cycle starts when this many new feedback rows arrived ...
      every: 3600                      # ... checked this often (seconds)
      cycles: null                     # stop after this many cycles (null: run until stopped)
      recipe: auto                     # sft | dpo | kto | auto
      replay_ratio: 1.0
      holdout: 0.2
      max_regression: 2.0
      set: []                          # --set overrides for the retrained runs, e.g. train.epochs=4
      out: runs/loop                   # each cycle's run lands in out/cycle-N

State lives in out/loop.json (cycles done, the run now in service, the time feedback was last read), so a
stopped loop continues where it was. out/loop.html lists every cycle, each linking its run's report and
the previous cycle.
"""

from __future__ import annotations

import html
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from tuneloop.errors import ConfigError
from tuneloop.workspace import read_json, write_json, write_text


class LoopSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    run: str = Field(..., description="The run in service when the loop starts.")
    store: str = Field(..., description="The serve store: a SQLite file or a SQLAlchemy URL.")
    server: str | None = Field(None, description="The tuneloop server to promote to; omit to gate only.")
    model: str | None = Field(None, description="The model id on the server (default: the run directory's name).")
    api_key_file: str | None = None
    min_feedback: int = Field(50, ge=1)
    every: float = Field(3600, gt=0, description="Seconds between checks for new feedback.")
    cycles: int | None = Field(None, ge=1)
    recipe: Literal["auto", "sft", "dpo", "kto"] = "auto"
    replay_ratio: float = Field(1.0, ge=0)
    holdout: float = Field(0.2, ge=0, lt=0.9)
    paraphrases: int = Field(4, ge=0, description="sft: rewordings of each correction's question trained on too.")
    max_regression: float = Field(2.0, ge=0)
    set: list[str] = Field(default_factory=list)
    out: str = "runs/loop"


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


def run_cycle(settings: LoopSettings, state: dict, console_print=print) -> dict:
    """One cycle: export the feedback since the last cycle, retrain, gate, and promote a passing run."""
    from tuneloop.feedback.gate import GateRule
    from tuneloop.feedback.promote import promote, read_api_key
    from tuneloop.feedback.retrain import retrain
    from tuneloop.feedback.store_export import export_store

    out = Path(settings.out)
    number = len(state["cycles"]) + 1
    started = datetime.now(timezone.utc)
    served = Path(state["served"])
    export_dir = out / f"cycle-{number}-feedback"
    export_store(settings.store, export_dir, served, state.get("since"), None, console_print)
    candidate = out / f"cycle-{number}"
    decision = retrain(served, export_dir, candidate, settings.recipe, settings.replay_ratio, settings.holdout,
                       overrides=settings.set, rule=GateRule(max_regression=settings.max_regression),
                       overwrite=True, console_print=console_print, paraphrases=settings.paraphrases)
    entry = {"cycle": number, "started": started.isoformat(), "served": str(served), "candidate": str(candidate),
             "decision": decision["decision"], "reasons": decision["reasons"], "promoted": False}
    if decision["decision"] == "promote" and settings.server:
        answer = promote(candidate, settings.server, settings.model or Path(state["first"]).name,
                         read_api_key(Path(settings.api_key_file)) if settings.api_key_file else None)
        entry.update(promoted=True, version=answer.get("version"), previous_version=answer.get("previous_version"))
    if decision["decision"] == "promote":
        state["served"] = str(candidate)  # the next cycle starts from the model now in service
    state["since"] = started.isoformat()
    state["cycles"].append(entry)
    return entry


def run_loop(settings: LoopSettings, console_print=print, sleep=time.sleep) -> dict:
    """Cycle whenever min_feedback new rows arrived, checking every `every` seconds, up to `cycles` cycles."""
    from tuneloop.feedback.store_export import store_url_of

    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "loop.json"
    state = read_json(state_file) if state_file.is_file() else {"first": settings.run, "served": settings.run,
                                                                  "since": None, "cycles": []}
    url = store_url_of(settings.store)
    while settings.cycles is None or len(state["cycles"]) < settings.cycles:
        since = datetime.fromisoformat(state["since"]) if state.get("since") else None
        waiting = count_feedback(url, since)
        if waiting < settings.min_feedback:
            console_print(f"loop: {waiting} new feedback row(s), waiting for {settings.min_feedback}; next check "
                          f"in {settings.every:g}s")
            sleep(settings.every)
            continue
        console_print(f"loop: cycle {len(state['cycles']) + 1} on {waiting} new feedback row(s)")
        entry = run_cycle(settings, state, console_print)
        write_json(state_file, state)
        write_text(out / "loop.html", loop_page(state))
        console_print(f"loop: cycle {entry['cycle']}: {entry['decision']}"
                      + (" and promoted" if entry["promoted"] else ""))
    return state


def loop_page(state: dict) -> str:
    """out/loop.html: one row per cycle with its decision, linking the run's report and the previous cycle."""
    rows = []
    for entry in state["cycles"]:
        report = Path(entry["candidate"]).name + "/report.html"
        previous = f"<a href='#cycle-{entry['cycle'] - 1}'>cycle {entry['cycle'] - 1}</a>" if entry["cycle"] > 1 \
            else html.escape(entry["served"])
        rows.append(f"<tr id='cycle-{entry['cycle']}'><td>{entry['cycle']}</td><td>{html.escape(entry['started'])}</td>"
                    f"<td>{previous}</td><td><a href='{html.escape(report)}'>{html.escape(entry['candidate'])}</a></td>"
                    f"<td>{entry['decision']}{' (promoted)' if entry['promoted'] else ''}</td>"
                    f"<td>{html.escape('; '.join(entry['reasons']))}</td></tr>")
    return ("<!doctype html><meta charset='utf-8'><title>tuneloop loop</title>"
            "<style>body{font-family:sans-serif;margin:2em}td,th{border:1px solid #ccc;padding:4px 8px}"
            "table{border-collapse:collapse}</style><h1>Feedback loop</h1>"
            f"<p>In service now: {html.escape(state['served'])}</p><table><tr><th>cycle</th><th>started</th>"
            "<th>started from</th><th>run</th><th>gate</th><th>why</th></tr>" + "".join(rows) + "</table>")
