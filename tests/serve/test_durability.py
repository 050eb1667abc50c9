"""kill -9 under load, then restart: every reply that got a 200 and every feedback that got a 201 is stored.

The SQLite case runs last in test_openai_client.py, on that module's server, to spare one server start.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
from serve_helpers import PROMPTS, ServerProcess

from tuneloop.serve.store import read_tables


def load_then_kill(server: ServerProcess, requests: int = 40, clients: int = 10, kill_after: int = 6,
                   headers: dict | None = None):
    """Fire concurrent chats (each 200 followed by a feedback), SIGKILL the server mid-load; what was acknowledged."""
    answered: list[str] = []
    rated: list[str] = []
    lock = threading.Lock()

    def one(index: int) -> None:
        try:
            reply = httpx.post(server.url + "/v1/chat/completions", timeout=60, headers=headers, json={
                "model": "alpha", "messages": [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}],
                "max_tokens": 12 + index % 12, "temperature": 0.7, "user": f"user{index}"})
            if reply.status_code != 200:
                return
            with lock:
                answered.append(reply.json()["id"])
            feedback = httpx.post(server.url + "/v1/feedback", timeout=60, headers=headers,
                                  json={"id": reply.json()["id"], "rating": "up" if index % 2 else "down"})
            if feedback.status_code == 201:
                with lock:
                    rated.append(reply.json()["id"])
        except httpx.HTTPError:
            pass  # cut off by the kill: never acknowledged, so nothing is owed

    with ThreadPoolExecutor(clients) as pool:
        futures = [pool.submit(one, i) for i in range(requests)]
        deadline = time.monotonic() + 60
        while len(rated) < kill_after and time.monotonic() < deadline:
            time.sleep(0.01)
        server.kill9()
        for future in futures:
            future.result()
    unfinished = requests - len(answered)
    return answered, rated, unfinished


def check_nothing_acknowledged_is_lost(url: str, answered: list[str], rated: list[str], unfinished: int) -> None:
    assert len(rated) >= 6 and unfinished > 0  # the kill really came under load
    requests, feedback = read_tables(url)
    stored = {row["id"]: row for row in requests}
    assert not [request_id for request_id in answered if request_id not in stored]
    assert all(stored[request_id]["status"] == 200 and stored[request_id]["reply"] is not None
               for request_id in answered)
    assert set(rated) <= {row["request_id"] for row in feedback}


def test_postgresql_kill9(adapter_runs, tmp_path, postgres_url):
    server = ServerProcess([str(adapter_runs["alpha"]), "--store", postgres_url], tmp_path / "server.log")
    answered, rated, unfinished = load_then_kill(server)
    # Opening the store again is what a restart does first (migrations to head); then every acknowledged row is read.
    check_nothing_acknowledged_is_lost(postgres_url, answered, rated, unfinished)
