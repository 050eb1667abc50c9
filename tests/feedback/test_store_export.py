"""Feedback exported from a real serve store (SQLite, and PostgreSQL through the test server)."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from conftest import chat_row, write_jsonl

from tuneloop.errors import TuneloopError
from tuneloop.feedback.store_export import export_store
from tuneloop.serve.store import Store, utcnow

SYSTEM = {"role": "system", "content": "You help customers."}


def fill(store: Store) -> None:
    now = utcnow()
    for index, (question, reply, rating, correction) in enumerate([
        ("How long is a fitting?", "An hour.", "down", "A fitting takes 50 minutes."),
        ("Where is the rental fleet?", "In Oslo.", "down", "The rental fleet is in Drammen."),
        ("Which tyre resists punctures?", "The Thornguard.", "up", None),
        ("When does the shop open?", "At 9.", "down", "The shop opens at 7:30."),  # copies a test question
    ]):
        request_id = f"chatcmpl-{index}"
        store.record_request(id=request_id, created_at=now, finished_at=now, endpoint="chat", model="bot",
                             variant="bot", messages=[SYSTEM, {"role": "user", "content": question}], reply=reply,
                             status=200, adapter_version="abc123")
        store.record_feedback("rating", request_id, rating=rating, correction=correction, user_hash=f"u{index}")
    store.record_request(id="chatcmpl-other", created_at=now, finished_at=now, endpoint="chat", model="other",
                         variant="other", messages=[SYSTEM, {"role": "user", "content": "Hi?"}], reply="Hello.",
                         status=200)
    store.record_feedback("rating", "chatcmpl-other", rating="down", correction="Hi there.")
    store.record_request(id="chatcmpl-a", created_at=now, finished_at=now, endpoint="chat", model="bot",
                         variant="bot", messages=[SYSTEM, {"role": "user", "content": "Best bike?"}], reply="Scree.",
                         status=200)
    store.record_request(id="chatcmpl-b", created_at=now, finished_at=now, endpoint="chat", model="bot",
                         variant="bot", messages=[SYSTEM, {"role": "user", "content": "Best bike?"}], reply="Pebble.",
                         status=200)
    store.record_feedback("pairwise", "chatcmpl-a", "chatcmpl-b", preferred_request_id="chatcmpl-b")


def served_run(tmp_path):
    run = tmp_path / "served"
    write_jsonl(run / "data" / "test.jsonl", [chat_row("When does the shop open?", "At 7:30.", "7:30")])
    (run / "config.yaml").write_text("output_dir: x\n")
    return run


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_export_from_a_store_applies_the_rules(backend, tmp_path, request):
    url = (request.getfixturevalue("postgres_url") if backend == "postgresql"
           else f"sqlite:///{tmp_path / 'serve.db'}")
    store = Store(url)
    fill(store)
    store.close()
    summary = export_store(url, tmp_path / "out", served_run(tmp_path), model="bot", console_print=lambda *_: None)
    sft = [json.loads(line) for line in (tmp_path / "out" / "sft.jsonl").read_text().splitlines()]
    assert sorted(row["messages"][-1]["content"] for row in sft) == ["A fitting takes 50 minutes.",
                                                                     "The rental fleet is in Drammen."]
    assert summary["leaked_feedback"] == 1 and summary["thumbs_up_rows"] == 1
    preference = [json.loads(line) for line in (tmp_path / "out" / "preference.jsonl").read_text().splitlines()]
    assert {"chosen": "Pebble.", "rejected": "Scree."}.items() <= next(
        row for row in preference if row["prompt"][-1]["content"] == "Best bike?").items()
    assert (tmp_path / "out" / "audit.json").is_file()

    later = export_store(url, tmp_path / "later", since=(utcnow() + timedelta(hours=1)).isoformat(),
                         console_print=lambda *_: None)
    assert later["feedback_rows"] == 0 and later["pairwise_rows"] == 0


def test_a_missing_store_file_is_named(tmp_path):
    with pytest.raises(TuneloopError, match="no such store file"):
        export_store(str(tmp_path / "nope.db"), tmp_path / "out", console_print=lambda *_: None)
