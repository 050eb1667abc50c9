"""The UI in a real browser: start a tiny run and watch it live (through a reload, a stop and resume, and a UI
restart), open its report, chat with tuned and baseline side by side, correct a reply, accept it in the inbox,
and find it in `feedback export`; user errors as plain messages."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
from ui_helpers import browser, page, ui_env, ui_server, ui_workspace

from tuneloop.feedback.store_export import export_store

# How many train-loss points the live chart shows (the SVG's data attribute), as a JavaScript expression.
CHART_POINTS = "+(document.querySelector('#live-chart svg')?.dataset.trainLossPoints ?? -1)"


def train_points(page) -> int:
    return page.evaluate(f"() => {CHART_POINTS}")


def test_run_live_report_chat_feedback_inbox_export(page, ui_server, ui_workspace, tmp_path):
    page.goto(f"{ui_server.url}/runs")
    assert "No runs in" in page.inner_text("main")

    # New run from the example: the audit shows before anything trains; then start it.
    page.click("text=New run")
    page.select_option("#example-select", "tiny.yaml")
    page.click("#use-example")
    page.wait_for_selector("#audit")
    assert "train.jsonl" in page.inner_text("#audit")
    assert not (ui_workspace["runs"] / "tiny").exists()  # nothing trains before Start
    page.fill("input[name=name]", "tiny")
    page.click("#start-button")
    page.wait_for_url(f"{ui_server.url}/runs/tiny")

    # The live curve grows; a reload mid-run shows the points so far and keeps growing.
    page.wait_for_function(f"() => {CHART_POINTS} >= 3", timeout=60_000)
    before = train_points(page)
    page.reload()
    assert train_points(page) >= before  # the curve comes back from the run directory's log
    page.wait_for_function(f"() => {CHART_POINTS} > {before}", timeout=30_000)

    # Stop saves a checkpoint; Resume continues from it (the page reloads itself when the job ends).
    page.click("#stop-button")
    page.wait_for_selector("#resume-button", timeout=60_000)
    assert page.inner_text("#run-status") == "stopped"
    stopped_at = train_points(page)
    assert list((ui_workspace["runs"] / "tiny" / "checkpoints").glob("checkpoint-*"))
    page.click("#resume-button")
    page.wait_for_selector("#stop-button")  # the resumed job is running

    # Restarting the UI loses no run (it trains in its own process); the open page reconnects by itself.
    ui_server.terminate()
    page.wait_for_function("() => document.querySelector('#live-connection').textContent.includes('retrying')")
    ui_server.start()
    page.wait_for_function(f"() => {CHART_POINTS} > {stopped_at}", timeout=60_000)
    assert page.inner_text("#live-connection") in ("live", "")

    # When the run finishes the report is there, and the runs table lists it.
    page.wait_for_selector("#run-frame", timeout=90_000)
    assert train_points(page) == 150  # every third step of 450, before and after the stop, once each
    assert page.inner_text("#run-status") == "finished"
    report = page.frame(name="run-frame")
    report.wait_for_load_state()
    assert "baseline" in report.content().lower()
    page.goto(f"{ui_server.url}/runs")
    row = page.inner_text("tr[data-run=tiny]")
    assert "finished" in row and "lora" in row and "→" in row

    # Chat: the same prompt to the tuned model and its baseline.
    page.goto(f"{ui_server.url}/chat")
    page.fill("#chat-prompt", "When do the Larkspur stores open?")
    page.click("#chat-send")
    page.wait_for_selector("section.pane >> nth=1")
    labels = page.locator("section.pane h2").all_inner_texts()
    assert labels[0].endswith("tuned") and "baseline" in labels[1]

    # A correction on the tuned reply goes to the store and shows in the inbox, waiting for review.
    tuned = page.locator("section.pane").first
    tuned.locator("textarea.correction").fill("They open at 7:30 every day, all week.")
    tuned.locator("text=Send correction").click()
    page.wait_for_selector("#feedback-noted")
    page.click("text=Feedback inbox")
    item = page.locator("section.inbox-item").filter(has_text="When do the Larkspur stores open?")
    assert "to review" in item.inner_text()
    assert page.inner_text("#count-to-review") == "1"

    store = str(ui_workspace["runs"] / "serve.db")
    not_reviewed = export_store(store, tmp_path / "before", console_print=lambda _: None, reviewed_only=True)
    assert not_reviewed["feedback_rows"] == 0  # not accepted yet: --reviewed leaves it out

    item.locator("button[value=accept]").click()
    page.wait_for_load_state()
    assert page.inner_text("#count-accepted") == "1"
    assert "accepted" in page.locator("section.inbox-item").first.inner_text()
    export = [sys.executable, "-m", "tuneloop.cli", "feedback", "export", store, "--reviewed"]
    after = subprocess.run([*export, "--out", str(tmp_path / "after")], env=ui_env(), capture_output=True,
                           text=True, timeout=120)
    assert after.returncode == 0, after.stderr
    assert "sft.jsonl 1" in after.stderr
    rows = [json.loads(line) for line in (tmp_path / "after" / "sft.jsonl").read_text().splitlines()]
    assert rows[0]["messages"][-1] == {"role": "assistant", "content": "They open at 7:30 every day, all week."}
    assert "Traceback" not in ui_server.output()


def test_user_errors_show_a_message_and_log_no_traceback(page, ui_server, ui_workspace, tmp_path):
    # A bad upload: not rows tuneloop can read.
    bad = tmp_path / "notes.jsonl"
    bad.write_text("this is not json\n")
    page.goto(f"{ui_server.url}/new")
    page.set_input_files("#upload-file", str(bad))
    page.click("#upload-button")
    message = page.inner_text("#error-message")
    assert "notes.jsonl:1: not valid JSON" in message and "drafts" not in message

    # An invalid config value: the message names the key.
    page.goto(f"{ui_server.url}/new")
    page.select_option("#example-select", "tiny.yaml")
    page.click("#use-example")
    page.fill("input[name='train.learning_rate']", "fast")
    page.fill("input[name=name]", "bad-values")
    page.click("#start-button")
    problems = page.inner_text("#form-problems")
    assert "train.learning_rate" in problems
    assert not (ui_workspace["runs"] / "bad-values").exists()

    # A run that crashes (its model does not exist): the run page says why.
    page.fill("input[name='train.learning_rate']", "0.01")
    page.fill("input[name='model.name']", "no-such-model-anywhere")
    page.fill("input[name=name]", "crashes")
    page.click("#start-button")
    page.wait_for_url(f"{ui_server.url}/runs/crashes")
    page.wait_for_selector("#run-failure:not([hidden])", timeout=60_000)
    assert "no-such-model-anywhere" in page.inner_text("#run-failure")
    assert "Traceback" not in ui_server.output()


def test_another_site_cannot_post_to_a_loopback_ui(ui_server):
    """This UI needs no password (loopback), yet a form another site's page submits to it is refused."""
    evil = httpx.post(f"{ui_server.url}/inbox/retrain", data={"run": "tiny"}, headers={"Origin": "http://evil.test"})
    assert evil.status_code == 403
    same = httpx.post(f"{ui_server.url}/inbox/retrain", data={"run": "nope"}, headers={"Origin": ui_server.url})
    assert same.status_code == 400 and "no run called" in same.text  # reached the route
