"""User input is rendered, never run: hostile prompts, corrections and comments sent through `tuneloop serve` are
shown as text by the monitor page, the UI's inbox and loop.html in Chromium; the API key and the UI password
appear in no log, store, run directory or page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import httpx
from ui_helpers import UiServer, browser, page, ui_env  # noqa: F401 - fixtures

sys.path.insert(0, str(Path(__file__).parents[1] / "serve"))
from serve_helpers import ServerProcess  # noqa: E402

# Each sets window.__pwned when a page runs it: a script tag, attribute breakouts, an escaped-context breakout.
HOSTILE = [
    '<script>window.__pwned = "script"</script>',
    '"><img src=x onerror="window.__pwned=\'img\'">',
    "'><svg onload=\"window.__pwned='svg'\"></svg>",
    '</textarea></pre><script>window.__pwned="textarea"</script>',
    '<a href="javascript:window.__pwned=\'href\'" id=hostile-link>click</a>',
]
API_KEY = "sk-tuneloop-test-7f3c9a1e5b2d4c6a8e0f"
PASSWORD = "purple elephant orchestra 42"


def not_run(page, url: str) -> str:  # noqa: F811 - the page fixture
    page.goto(url)
    page.wait_for_load_state("load")
    links = page.locator("#hostile-link")
    for index in range(links.count()):  # a link a payload made would run on click: there must be none
        links.nth(index).click()
    assert page.evaluate("window.__pwned") is None, f"{url} ran user input: {page.evaluate('window.__pwned')}"
    return page.inner_text("body")


def test_hostile_feedback_is_shown_as_text_everywhere_and_no_secret_leaks(page, adapter_runs, tmp_path):  # noqa: F811
    keys = tmp_path / "keys"
    keys.write_text(API_KEY + "\n")
    store = tmp_path / "serve.db"
    server = ServerProcess([str(adapter_runs["alpha"]), "--store", str(store), "--api-key-file", str(keys)],
                           tmp_path / "serve.log")
    headers = {"Authorization": f"Bearer {API_KEY}"}
    try:
        ids = []
        for index, payload in enumerate(HOSTILE):
            reply = httpx.post(server.url + "/v1/chat/completions", headers=headers, timeout=60, json={
                "model": "alpha", "max_tokens": 4, "user": payload,
                "messages": [{"role": "user", "content": f"Question {index}: {payload}"}]})
            assert reply.status_code == 200, reply.text
            ids.append(reply.json()["id"])
            feedback = httpx.post(server.url + "/v1/feedback", headers=headers, timeout=30, json={
                "id": ids[-1], "rating": "down", "correction": payload, "comment": payload})
            assert feedback.status_code == 201, feedback.text
        pick = httpx.post(server.url + "/v1/feedback", headers=headers, timeout=30,
                          json={"id_a": ids[0], "id_b": ids[1], "preferred": "a", "comment": HOSTILE[2]})
        assert pick.status_code == 201, pick.text
        # A request the server refuses keeps its message in the store: the model name is user input too.
        refused = httpx.post(server.url + "/v1/chat/completions", headers=headers, timeout=30, json={
            "model": HOSTILE[0], "messages": [{"role": "user", "content": "hi"}]})
        assert refused.status_code == 404
    finally:
        server.stop()

    monitor = tmp_path / "monitor.html"
    done = subprocess.run([sys.executable, "-m", "tuneloop.cli", "monitor", str(store), "--out", str(monitor)],
                          env=ui_env(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    not_run(page, monitor.as_uri())

    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    (tmp_path / "examples").mkdir()
    ui = UiServer(tmp_path / "runs", tmp_path / "examples", tmp_path / "ui.log", "--store", str(store),
                  "--password-file", str(password))
    try:
        page.goto(f"{ui.url}/inbox")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url(f"{ui.url}/inbox")
        shown = not_run(page, f"{ui.url}/inbox")
        for payload in HOSTILE:  # the corrections are there, as the text the user typed
            assert payload in shown
        inbox_html = page.content()
        # A state-changing route refuses a post from another site, even with the session cookie.
        cookies = {cookie["name"]: cookie["value"] for cookie in page.context.cookies()}
        forged = httpx.post(f"{ui.url}/inbox/item/1", data={"action": "accept"}, cookies=cookies,
                            headers={"Origin": "https://evil.example"}, timeout=30)
        assert forged.status_code == 403
    finally:
        ui.stop()
    from tuneloop.serve.store import read_tables

    assert all(row["review"] is None for row in read_tables(f"sqlite:///{store}")[1])  # the forged post did nothing

    from tuneloop.feedback.loop import loop_page

    loop_html = tmp_path / "loop.html"
    entry = {"cycle": 1, "started": HOSTILE[1], "served": HOSTILE[3], "candidate": HOSTILE[4], "state": "failed",
             "failed_step": HOSTILE[2], "error": HOSTILE[0], "steps": [], "resumed": 0}
    loop_html.write_text(loop_page({"served": HOSTILE[3], "cycles": [entry], "current": None}))
    assert HOSTILE[0] in not_run(page, loop_html.as_uri())

    # No secret in any log, store, page or file this left behind.
    texts = {"serve log": (tmp_path / "serve.log").read_bytes(), "ui log": (tmp_path / "ui.log").read_bytes(),
             "store": store.read_bytes(), "monitor page": monitor.read_bytes(), "inbox page": inbox_html.encode()}
    for path in tmp_path.rglob("*"):
        if path.is_file() and path.name not in ("keys", "password"):
            texts[str(path)] = path.read_bytes()
    for secret in (API_KEY, PASSWORD):
        leaked = [name for name, content in texts.items() if secret.encode() in content]
        assert not leaked, f"{secret!r} found in {leaked}"
