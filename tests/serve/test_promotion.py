"""Promotion while serving: in-flight requests finish on the old weights, new ones get the new weights, every
reply comes whole from exactly one version (and the store says which), and rollback brings the old one back."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serve_helpers import PROMPTS, ServerProcess

from tuneloop.errors import TuneloopError
from tuneloop.feedback.promote import promote, rollback
from tuneloop.serve.store import read_tables


def greedy(url: str, model: str, prompt: str, max_tokens: int = 24) -> str:
    reply = httpx.post(url + "/v1/chat/completions", timeout=120, json={
        "model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens,
        "temperature": 0})
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]["message"]["content"]


def write_promotion(run_dir, decision: str) -> None:
    (run_dir / "promotion.json").write_text(json.dumps({"decision": decision, "reasons": ["constructed"],
                                                        "served": "bot", "checks": {}}))


@pytest.fixture(scope="module")
def server(adapter_runs, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("promotion")
    # "bot" answers from alpha; "ref-beta" serves beta alone, to know what beta's weights say.
    process = ServerProcess(["--name", f"bot={adapter_runs['alpha']}", "--name", f"ref-beta={adapter_runs['beta']}",
                             "--store", str(tmp_path / "serve.db")], tmp_path / "serve.log")
    yield process, f"sqlite:///{tmp_path / 'serve.db'}", tmp_path / "serve.log"
    process.stop()


def test_promotion_refuses_what_the_gate_rejected_and_paths_that_are_not_runs(server, adapter_runs, tmp_path):
    process, _, log = server
    write_promotion(adapter_runs["beta"], "reject")
    with pytest.raises(TuneloopError, match="gate rejected"):
        promote(adapter_runs["beta"], process.url, "bot")
    missing = httpx.post(process.url + "/admin/promote", json={"model": "bot", "run_dir": str(tmp_path / "nope")})
    assert missing.status_code == 400 and "not a directory" in missing.json()["error"]["message"]
    (tmp_path / "empty").mkdir()
    empty = httpx.post(process.url + "/admin/promote", json={"model": "bot", "run_dir": str(tmp_path / "empty")})
    assert empty.status_code == 400 and empty.json()["error"]["param"] == "run_dir"
    unknown = httpx.post(process.url + "/admin/promote", json={"model": "nobody", "run_dir": str(tmp_path)})
    assert unknown.status_code == 404
    assert "Traceback" not in log.read_text()


def test_promotion_under_load_drops_nothing_and_each_reply_has_one_version(server, adapter_runs):
    process, store, _ = server
    url = process.url
    alpha_said = {p: greedy(url, "bot", p) for p in PROMPTS}
    beta_said = {p: greedy(url, "ref-beta", p) for p in PROMPTS}
    assert alpha_said != beta_said  # the two adapters really answer differently
    write_promotion(adapter_runs["beta"], "promote")

    results, lock, stop = [], threading.Lock(), threading.Event()

    def client(index: int) -> None:
        while not stop.is_set():
            prompt = PROMPTS[index % len(PROMPTS)]
            reply = httpx.post(url + "/v1/chat/completions", timeout=120, json={
                "model": "bot", "messages": [{"role": "user", "content": prompt}], "max_tokens": 24,
                "temperature": 0})
            with lock:
                results.append((prompt, reply.status_code, reply.json()))

    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(client, i) for i in range(6)]
        time.sleep(0.5)
        answer = promote(adapter_runs["beta"], url, "bot")
        promoted_at = len(results)
        time.sleep(1.0)
        stop.set()
        for future in futures:
            future.result()

    assert answer["previous_version"] != answer["version"]
    assert all(status == 200 for _, status, _ in results)
    assert promoted_at > 0 and len(results) > promoted_at  # requests ran before and after the swap
    requests, _ = read_tables(store)
    version_of = {row["id"]: row["adapter_version"] for row in requests}
    for prompt, _, body in results:
        text = body["choices"][0]["message"]["content"]
        version = version_of[body["id"]]
        expected = {answer["previous_version"]: alpha_said[prompt], answer["version"]: beta_said[prompt]}
        assert version in expected and text == expected[version]  # whole, from the version the store names
    assert greedy(url, "bot", PROMPTS[0]) == beta_said[PROMPTS[0]]

    back = rollback(url, "bot")
    assert back["version"] == answer["previous_version"]
    assert greedy(url, "bot", PROMPTS[0]) == alpha_said[PROMPTS[0]]
    with pytest.raises(TuneloopError, match="nothing to roll back"):
        rollback(url, "bot")
