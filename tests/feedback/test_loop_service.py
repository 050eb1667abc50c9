"""The unattended loop as real processes: kill -9 at every step, a full disk, two loops, the lease in the store.

Each test runs `tuneloop loop CONFIG --once` as a subprocess against a real `tuneloop serve` on the tiny model,
and checks what the store, the run directories and the server say against what the loop printed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from conftest import write_config

from tuneloop.config.load import validate_config
from tuneloop.feedback.loop_lease import LeaseHeld, LeaseLost, LoopLease, read_loop_state
from tuneloop.serve.store import Store, utcnow
from tuneloop.stages import run_all
from tuneloop.workspace import read_json

sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
from serve_helpers import SRC, ServerProcess  # noqa: E402

MODEL = "bot"
# Every corrected reply is the same sentence: the tiny random model learns it within a few epochs for any
# question, so the held-out feedback slice gains clearly and the gate promotes (what the promoting step needs).
CORRECTION = "The warranty lasts 7 years."
QUESTIONS = [f"Question number {index} about shop {index % 7}?" for index in range(96)]


def add_feedback(url: str, count: int, offset: int = 0) -> None:
    store = Store(url)
    try:
        for index in range(offset, offset + count):
            request_id = f"chatcmpl-loop-{index}"
            store.record_request(id=request_id, created_at=utcnow(), finished_at=utcnow(), endpoint="chat",
                                 model=MODEL, variant=MODEL,
                                 messages=[{"role": "user", "content": QUESTIONS[index % len(QUESTIONS)]}],
                                 reply="I do not know.", status=200)
            store.record_feedback("rating", request_id, rating="down", correction=CORRECTION,
                                  user_hash=f"user-{index % 5}")
    finally:
        store.close()


@pytest.fixture()
def served(tmp_path, tiny_config, request):
    """The served run (the tiny model trained briefly) behind a real `tuneloop serve`, and a loop config for it.

    The store is SQLite unless the test asks for PostgreSQL with @pytest.mark.parametrize("served", ["postgresql"],
    indirect=True).
    """
    tiny_config["train"]["epochs"] = 1
    tiny_config["evaluate"]["max_samples"] = 4
    run, _ = run_all(validate_config(tiny_config), console_print=lambda *_: None)
    backend = getattr(request, "param", "sqlite")
    url = request.getfixturevalue("postgres_url") if backend == "postgresql" else f"sqlite:///{tmp_path / 'serve.db'}"
    server = ServerProcess(["--name", f"{MODEL}={run.root}", "--store", url], tmp_path / "serve.log")
    # replay 0 and max_regression 100: the gate then judges only the feedback slice, which this feedback wins;
    # holdout 0.5 of 48 rows: a slice of 24 (enough to judge) and half the training time of 0.25 of 96.
    config = {"loop": {"run": str(run.root), "store": url, "server": server.url, "model": MODEL,
                       "min_feedback": 40, "every": 1, "recipe": "sft", "holdout": 0.5, "paraphrases": 0,
                       "replay_ratio": 0.0, "max_regression": 100.0,
                       "set": ["train.epochs=8", "tracking.backend=none"], "out": str(tmp_path / "loop")}}
    yield {"run": run.root, "url": url, "server": server, "config": config, "tmp": tmp_path,
           "out": tmp_path / "loop"}
    server.stop()


def loop_command(setup: dict, env: dict | None = None) -> tuple[list[str], dict]:
    config = write_config(setup["tmp"] / "loop.yaml", setup["config"])
    environment = {**os.environ, "PYTHONPATH": f"{SRC}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
                   "OMP_NUM_THREADS": "1", "TUNELOOP_ALLOCATOR": "system", **(env or {})}
    return [sys.executable, "-m", "tuneloop.cli", "loop", str(config), "--once"], environment


def run_loop_process(setup: dict, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    command, environment = loop_command(setup, env)
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout)


def served_root(setup: dict) -> Path:
    card = httpx.get(f"{setup['server'].url}/v1/models/{MODEL}", timeout=10).json()
    return Path(card["root"]).resolve()


def saved_state(setup: dict) -> dict:
    return read_loop_state(setup["url"], MODEL)


@pytest.mark.parametrize("served", ["postgresql"], indirect=True)
def test_kill9_at_every_step_resumes_that_step_and_promotes_only_after_the_gate(served):
    add_feedback(served["url"], 48)
    original = served["run"].resolve()
    candidate = served["out"] / "cycle-1"
    # Each run is killed (SIGKILL) once its step's work is done but before that is saved: the worst moment.
    for attempt, step in enumerate(["exporting", "training", "gating", "promoting"]):
        result = run_loop_process(served, {"TUNELOOP_LOOP_FAULT": step})
        assert result.returncode == -9, result.stdout + result.stderr
        state = saved_state(served)
        assert state["current"]["state"] == step and state["current"]["resumed"] == attempt
        assert state["cycles"] == []
        if attempt:
            assert f"resuming cycle 1 at {['exporting', 'training', 'gating'][attempt - 1]}" in result.stderr
        if step in ("exporting", "training"):  # no gate has finished: no decision exists to act on
            assert not (candidate / "promotion.json").exists()
        if step != "promoting":
            assert served_root(served) == original, f"the server changed weights before the gate, at {step}"
    # Killed after the server took the promotion: the resumed loop finds it there and does not send it again.
    assert served_root(served) == candidate.resolve()
    result = run_loop_process(served)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "already serves" in result.stderr
    state = saved_state(served)
    (entry,) = state["cycles"]
    assert entry["state"] == "done" and entry["decision"] == "promote" and entry["promoted"]
    assert entry["promoted_before_restart"] and entry["resumed"] == 4 and state["current"] is None
    assert read_json(candidate / "promotion.json")["decision"] == "promote"
    # Every step was finished once and only the interrupted ones ran again: two attempts at each.
    assert [(step["step"], step["attempt"]) for step in entry["steps"]] == [
        ("exporting", 2), ("training", 3), ("gating", 4), ("promoting", 5)]
    assert state["served"] == str(candidate) and state["since"] == entry["until"]
    assert "since" in state and served_root(served) == candidate.resolve()
    page = (served["out"] / "loop.html").read_text()
    assert "promote (promoted)" in page and "<td>4</td>" in page
    # The feedback the cycle trained on is exactly the window it fixed: nothing arrived twice or was lost.
    assert entry["feedback_rows"] == 48


def wait_for(condition, timeout: float = 120, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def start_loop_and_wait_until_it_trains(setup: dict) -> subprocess.Popen:
    """`tuneloop loop --once` in the background, returned once its first optimizer steps are logged."""
    command, environment = loop_command(setup)
    process = subprocess.Popen(command, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def training() -> bool:
        state = saved_state(setup) if process.poll() is None else None
        return bool(state and state.get("current") and state["current"]["state"] == "training"
                    and (setup["out"] / "cycle-1" / "train_log.jsonl").exists())

    try:
        wait_for(training, what="the loop to be training")
    except AssertionError:
        process.kill()
        raise
    return process


def test_a_second_loop_waits_for_the_first_and_takes_over_once_it_is_killed_mid_training(served):
    add_feedback(served["url"], 48)
    first = start_loop_and_wait_until_it_trains(served)
    try:
        # A second loop on the same store and name: it must not run the cycle beside the first.
        second = run_loop_process(served)
        assert second.returncode == 0 and "is held by" in second.stderr, second.stderr
        assert saved_state(served)["current"]["resumed"] == 0
        first.kill()  # SIGKILL in the middle of training
        first.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == -9
    state = saved_state(served)
    assert state["current"]["state"] == "training" and state["cycles"] == []
    assert not (served["out"] / "cycle-1" / "promotion.json").exists()
    # The holder's process is gone from this host, so the next loop takes the lease at once (no lease wait).
    took = run_loop_process(served)
    assert took.returncode == 0, took.stdout + took.stderr
    assert "took over" in took.stderr and "resuming cycle 1 at training" in took.stderr
    (entry,) = saved_state(served)["cycles"]
    assert entry["state"] == "done" and entry["resumed"] == 1 and entry["decision"] == "promote"
    assert [step["step"] for step in entry["steps"]] == ["exporting", "training", "gating", "promoting"]
    assert served_root(served) == (served["out"] / "cycle-1").resolve()


def test_sigterm_during_training_stops_the_loop_with_the_cycle_left_to_resume_not_failed(served):
    # systemd stops a service with SIGTERM; the trainer takes that signal itself (checkpoint, then stop), and the
    # loop must then stop too, leaving the cycle at training, rather than record a failure and start the next.
    add_feedback(served["url"], 48)
    loop = start_loop_and_wait_until_it_trains(served)
    loop.terminate()
    output, _ = loop.communicate(timeout=60)
    assert loop.returncode == 143, output
    assert "stopped while training" in output and "failed" not in output
    state = saved_state(served)
    assert state["current"]["state"] == "training" and state["cycles"] == []
    assert served_root(served) == served["run"].resolve()
    resumed = run_loop_process(served)  # the lease was released: no takeover needed
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "took over" not in resumed.stderr and "resuming cycle 1 at training" in resumed.stderr
    (entry,) = saved_state(served)["cycles"]
    assert entry["state"] == "done" and entry["decision"] == "promote" and entry["resumed"] == 1


@pytest.fixture()
def small_disk(tmp_path):
    """A 300 KiB tmpfs: room for a cycle's export (about 85 KiB), not for its training run's checkpoints."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(mount)], capture_output=True,
                            text=True)
    if result.returncode:
        pytest.skip(f"cannot mount a small tmpfs to fill (needs root, as CI runs): {result.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_fails_the_cycle_clearly_and_the_served_model_stays(served, small_disk):
    add_feedback(served["url"], 48)
    served["config"]["loop"]["out"] = str(small_disk / "loop")
    original = served_root(served)
    result = run_loop_process(served)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "No space left on device" in result.stderr and "The served model stays" in result.stderr
    assert "Traceback" not in result.stderr
    state = saved_state(served)
    (entry,) = state["cycles"]
    assert entry["state"] == "failed" and entry["failed_step"] == "training"
    assert f"No space left on device: the disk holding {small_disk / 'loop'} has" in entry["error"]
    assert state["served"] == str(served["run"]) and state["since"] is None  # the feedback is kept for a retry
    assert served_root(served) == original
    assert not (small_disk / "loop" / "cycle-1" / "promotion.json").exists()


def test_the_lease_admits_one_loop_per_name_and_fences_a_holder_that_lost_it(tmp_path, request, monkeypatch):
    from sqlalchemy import update

    from tuneloop.serve.store import LoopRow

    for url in (f"sqlite:///{tmp_path / 'serve.db'}", request.getfixturevalue("postgres_url")):
        holder = LoopLease(url, "bot", seconds=60, console_print=lambda *_: None)
        assert holder.acquire() is None
        holder.save({"cycles": [1]})
        with pytest.raises(LeaseHeld, match="is held by"):
            LoopLease(url, "bot", console_print=lambda *_: None).acquire()
        other = LoopLease(url, "another-model", console_print=lambda *_: None)
        assert other.acquire() is None
        other.release()
        # A loop on a host whose clock runs 10 minutes ahead still sees a live holder on another host as live:
        # heartbeats are written and compared on the database's clock, not each host's.
        with holder.engine.begin() as connection:
            connection.execute(update(LoopRow).where(LoopRow.name == "bot").values(host="elsewhere"))
        holder.save({"cycles": [1]})
        with monkeypatch.context() as skewed:
            skewed.setattr(time, "time", lambda real=time.time: real() + 600)
            with pytest.raises(LeaseHeld, match="is held by"):
                LoopLease(url, "bot", seconds=60, console_print=lambda *_: None).acquire()
        # A holder on another host whose heartbeat stopped longer ago than the lease is taken over ...
        with holder.engine.begin() as connection:
            connection.execute(update(LoopRow).where(LoopRow.name == "bot").values(
                host="elsewhere", heartbeat=time.time() - 61))
        said = []
        successor = LoopLease(url, "bot", seconds=60, console_print=said.append)
        assert successor.acquire() == {"cycles": [1]} and "took over" in said[0]
        # ... and the old holder can neither save nor promote: its next save fails.
        with pytest.raises(LeaseLost):
            holder.save({"cycles": [1, 2]})
        assert read_loop_state(url, "bot") == {"cycles": [1]}
        holder.release()  # releases nothing it no longer holds
        with pytest.raises(LeaseHeld):
            LoopLease(url, "bot", console_print=lambda *_: None).acquire()
        successor.release()
        last = LoopLease(url, "bot", console_print=lambda *_: None)
        assert last.acquire() == {"cycles": [1]}
        last.release()


def test_a_dpo_cycle_on_pairwise_picks_sent_through_the_server_uses_the_served_adapter_as_reference(served):
    """Preference feedback end to end: two replies per prompt from the server, a user's pick, a DPO cycle."""
    url = served["server"].url
    for index, question in enumerate(QUESTIONS[:48]):
        replies = [httpx.post(url + "/v1/chat/completions", timeout=60, json={
            "model": MODEL, "max_tokens": 6, "temperature": 1.0, "seed": index * 2 + side, "user": f"user-{index % 4}",
            "messages": [{"role": "user", "content": question}]}).json()["id"] for side in (0, 1)]
        picked = httpx.post(url + "/v1/feedback", timeout=30, json={"id_a": replies[0], "id_b": replies[1],
                                                                  "preferred": "a" if index % 3 else "b"})
        assert picked.status_code == 201, picked.text
    served["config"]["loop"].update(recipe="dpo", min_feedback=40, holdout=0.25,
                                    set=["train.epochs=1", "tracking.backend=none"])
    result = run_loop_process(served)
    assert result.returncode == 0, result.stdout + result.stderr
    (entry,) = saved_state(served)["cycles"]
    assert entry["state"] == "done" and entry["recipe"] == "dpo" and entry["pairwise_rows"] == 48
    adapter = served["run"] / "adapter"
    assert f"reference: the adapter training starts from ({adapter.resolve()}), frozen" in result.stderr \
        or f"reference: the adapter training starts from ({adapter}), frozen" in result.stderr, result.stderr[-3000:]
    decision = read_json(served["out"] / "cycle-1" / "promotion.json")
    assert decision["recipe"] == "dpo" and {"frozen test set", "feedback slice"} <= set(decision["checks"])
    # Judged like an SFT cycle: the frozen chat test set, and the held-out picks' preferred replies as the slice.
    assert decision["checks"]["frozen test set"]["n"] > 0 and decision["checks"]["feedback slice"]["n"] == 12
    assert entry["decision"] == decision["decision"]
    # Promoted only if the gate said so; otherwise the served model stays.
    expected = served["out"] / "cycle-1" if decision["decision"] == "promote" else served["run"]
    assert served_root(served) == expected.resolve()
