"""Several `tuneloop serve` replicas on one PostgreSQL store: shared rows, promotions every replica follows, a
replica killed under load, and PostgreSQL restarted under load (503 with Retry-After, then service by itself).

Real processes, real HTTP and a real PostgreSQL server throughout; each test compares what the store holds with
what the clients were told.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from conftest import postgres_or_skip
from serve_helpers import PROMPTS, ServerProcess

from tuneloop.serve.store import read_tables

FOLLOW = ["--follow-promotions", "0.5"]


def replica(adapter_runs, url: str, log: Path, *options: str) -> ServerProcess:
    return ServerProcess(["--name", f"bot={adapter_runs['alpha']}", "--store", url, *FOLLOW, *options], log)


def chat(server: ServerProcess, index: int, timeout: float = 60) -> httpx.Response:
    return httpx.post(server.url + "/v1/chat/completions", timeout=timeout, json={
        "model": "bot", "messages": [{"role": "user", "content": PROMPTS[index % len(PROMPTS)]}],
        "max_tokens": 6 + index % 6, "user": f"user{index % 5}"})


def root_of(server: ServerProcess) -> Path:
    return Path(httpx.get(server.url + "/v1/models/bot", timeout=10).json()["root"]).resolve()


def wait_until(condition, timeout: float = 30, what: str = "") -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")


BOUNDS = ["--max-body-bytes", "20000", "--max-tokens", "64", "--max-concurrent", "2"]


def assert_bounded(server: ServerProcess, store_url: str) -> None:
    """Each replica refuses, with a 4xx naming the field or option, what is beyond its own bounds."""
    before = {row["id"] for row in read_tables(store_url)[0]}
    message = [{"role": "user", "content": "hi"}]
    refusals = {
        "body": httpx.post(server.url + "/v1/chat/completions", timeout=30,
                           json={"model": "bot", "messages": [{"role": "user", "content": "x" * 30_000}]}),
        "max_tokens": httpx.post(server.url + "/v1/chat/completions", timeout=30,
                                 json={"model": "bot", "messages": message, "max_tokens": 65}),
        "n": httpx.post(server.url + "/v1/chat/completions", timeout=30,
                        json={"model": "bot", "messages": message, "n": 3}),
    }
    assert refusals["body"].status_code == 413 and "--max-body-bytes" in refusals["body"].json()["error"]["message"]
    assert refusals["max_tokens"].status_code == 400 and refusals["max_tokens"].json()["error"]["param"] == "max_tokens"
    assert refusals["n"].status_code == 400 and refusals["n"].json()["error"]["param"] == "n"
    with ThreadPoolExecutor(8) as pool:  # 8 at once against --max-concurrent 2
        burst = list(pool.map(lambda _: httpx.post(server.url + "/v1/chat/completions", timeout=60, json={
            "model": "bot", "messages": message, "max_tokens": 48, "temperature": 0}), range(8)))
    statuses = [response.status_code for response in burst]
    assert set(statuses) == {200, 429} and statuses.count(200) >= 2, statuses
    refusal = next(response for response in burst if response.status_code == 429).json()["error"]
    assert "--max-concurrent" in refusal["message"]
    # The store logs every answered request with the status its client got (the monitor counts refusals); an
    # oversized body is refused before it is read, so it leaves no row.
    added = [row["status"] for row in read_tables(store_url)[0] if row["id"] not in before]
    assert sorted(added) == sorted([400, 400, *statuses])


def test_replicas_share_rows_and_follow_each_others_promotions(adapter_runs, tmp_path, postgres_url):
    alpha, beta = adapter_runs["alpha"].resolve(), adapter_runs["beta"].resolve()
    first = replica(adapter_runs, postgres_url, tmp_path / "first.log", *BOUNDS)
    second = replica(adapter_runs, postgres_url, tmp_path / "second.log", *BOUNDS)
    third = None
    try:
        replies = [chat(server, index) for index, server in enumerate([first, second] * 4)]
        assert all(reply.status_code == 200 for reply in replies)
        ids = [reply.json()["id"] for reply in replies]
        # Feedback on each reply goes to the other replica: any replica takes feedback for any reply.
        for index, response_id in enumerate(ids):
            other = [second, first][index % 2]
            answer = httpx.post(other.url + "/v1/feedback", timeout=30, json={"id": response_id, "rating": "up"})
            assert answer.status_code == 201, answer.text
        requests, feedback = read_tables(postgres_url)
        assert sorted(row["id"] for row in requests) == sorted(ids) and len(set(ids)) == len(ids)
        assert sorted(row["request_id"] for row in feedback) == sorted(ids)
        for server in (first, second):
            assert_bounded(server, postgres_url)

        promoted = httpx.post(first.url + "/admin/promote", json={"model": "bot", "run_dir": str(beta)}, timeout=60)
        assert promoted.status_code == 200, promoted.text
        version = promoted.json()["version"]
        assert root_of(first) == beta
        waited = wait_until(lambda: root_of(second) == beta, what="the second replica to follow the promotion")
        assert waited < 10
        after = chat(second, 99)
        stored = {row["id"]: row for row in read_tables(postgres_url)[0]}
        assert stored[after.json()["id"]]["adapter_version"] == version != stored[ids[1]]["adapter_version"]

        # A replica started (or restarted) after the promotion serves the promoted weights, not its command line's.
        second.kill9()
        third = replica(adapter_runs, postgres_url, tmp_path / "third.log")
        assert root_of(third) == beta
        # A rollback on any replica is followed the same way.
        rolled = httpx.post(third.url + "/admin/rollback", json={"model": "bot"}, timeout=60)
        assert rolled.status_code == 200 and rolled.json()["version"] != version
        wait_until(lambda: root_of(first) == alpha, what="the first replica to follow the rollback")
    finally:
        for server in (first, second, third):
            if server is not None:
                server.stop()


def test_one_replica_killed_under_load_loses_nothing_and_the_other_keeps_answering(adapter_runs, tmp_path,
                                                                                   postgres_url):
    first = replica(adapter_runs, postgres_url, tmp_path / "first.log")
    second = replica(adapter_runs, postgres_url, tmp_path / "second.log")
    answered, rated, failed_on_second = [], [], []
    lock = threading.Lock()

    def one(index: int) -> None:
        server = [first, second][index % 2]
        try:
            reply = chat(server, index)
        except httpx.HTTPError:
            if server is second:
                failed_on_second.append(index)
            return  # cut off by the kill: never acknowledged, so nothing is owed
        if reply.status_code != 200:
            if server is second:
                failed_on_second.append(index)
            return
        with lock:
            answered.append(reply.json()["id"])
        # Feedback always through the survivor: it must take feedback for replies the killed one gave.
        feedback = httpx.post(second.url + "/v1/feedback", timeout=60, json={"id": reply.json()["id"],
                                                                             "rating": "down"})
        if feedback.status_code == 201:
            with lock:
                rated.append(reply.json()["id"])

    try:
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(one, i) for i in range(80)]
            wait_until(lambda: len(rated) >= 10, timeout=120, what="load before the kill")
            first.kill9()
            for future in futures:
                future.result()
        after = [chat(second, index).status_code for index in range(4)]
    finally:
        first.stop()
        second.stop()
    assert not failed_on_second and after == [200] * 4
    assert len(answered) < 80  # the kill came under load: some of the first replica's requests were cut off
    requests, feedback = read_tables(postgres_url)
    stored = {row["id"]: row for row in requests}
    assert all(request_id in stored and stored[request_id]["status"] == 200 for request_id in answered)
    assert set(rated) <= {row["request_id"] for row in feedback}


@pytest.fixture()
def own_postgres():
    """A PostgreSQL cluster of this test's own, since the test stops and restarts it."""
    server = postgres_or_skip()
    yield server
    server.stop()


def test_postgresql_restarted_under_load_gets_503_with_retry_after_and_service_resumes(adapter_runs, tmp_path,
                                                                                       own_postgres):
    url = own_postgres.create_database()
    server = replica(adapter_runs, url, tmp_path / "server.log")
    outcomes = []  # (sent, status, request id, Retry-After, fed back)
    lock = threading.Lock()
    stop = threading.Event()
    outage = {}

    def client(worker: int) -> None:
        index = worker
        while not stop.is_set():
            sent = time.monotonic()
            reply = chat(server, index, timeout=30)
            fed = None
            if reply.status_code == 200:
                feedback = httpx.post(server.url + "/v1/feedback", timeout=30,
                                      json={"id": reply.json()["id"], "rating": "up"})
                fed = feedback.status_code
                assert fed in (201, 503), feedback.text
            with lock:
                outcomes.append((sent, reply.status_code, reply.headers.get("x-request-id"),
                                 reply.headers.get("retry-after"), fed,
                                 reply.json()["id"] if reply.status_code == 200 else None))
            index += 4

    try:
        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(client, worker) for worker in range(4)]
            time.sleep(3)
            outage["start"] = time.monotonic()
            own_postgres.stop()  # immediate: the server process dies like a crash
            time.sleep(3)
            own_postgres.launch()
            outage["end"] = time.monotonic()
            time.sleep(4)
            stop.set()
            for future in futures:
                future.result()
    finally:
        server.stop()
    statuses = [status for _, status, *_ in outcomes]
    assert set(statuses) <= {200, 503}, sorted(set(statuses))  # never a 500, never a dropped connection
    refused = [row for row in outcomes if row[1] == 503]
    assert refused and all(row[3] == "2" for row in refused)
    # 503s only around the outage; 200s before it and again after, without restarting the server.
    assert all(outage["start"] - 1 <= sent <= outage["end"] + 2 for sent, *_ in refused)
    assert any(status == 200 and sent > outage["end"] + 2 for sent, status, *_ in outcomes)
    requests, feedback = read_tables(url)
    stored = {row["id"]: row for row in requests}
    answered = [row[5] for row in outcomes if row[1] == 200]
    assert all(request_id in stored and stored[request_id]["status"] == 200 for request_id in answered)
    assert {row[5] for row in outcomes if row[4] == 201} <= {row["request_id"] for row in feedback}
