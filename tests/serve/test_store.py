"""The store: migrations at open (idempotent), PII redaction or --store-raw, URLs, and --since."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import inspect

from tuneloop.errors import ConfigError
from tuneloop.serve.store import Store, UnknownRequest, parse_since, read_tables, store_url, utcnow


def record(store: Store, request_id: str, text: str) -> None:
    store.record_request(id=request_id, created_at=utcnow(), endpoint="chat", model="m", variant="m",
                         messages=[{"role": "user", "content": text}], reply=f"Noted, {text}", status=200)


def test_redacted_by_default_raw_on_request_and_reopening_keeps_rows(tmp_path):
    url = store_url(str(tmp_path / "s.db"), tmp_path)
    store = Store(url)
    record(store, "chatcmpl-1", "I am ana@example.com")
    store.close()
    raw = Store(url, raw=True)  # a second open runs the migrations again: nothing to do, rows kept
    record(raw, "chatcmpl-2", "I am ana@example.com")
    with pytest.raises(UnknownRequest):
        raw.record_feedback("rating", "chatcmpl-3", rating="up", score=1.0)
    raw.close()
    requests, feedback = read_tables(url)
    by_id = {r["id"]: r for r in requests}
    assert by_id["chatcmpl-1"]["messages"][0]["content"] == "I am [EMAIL]"
    assert by_id["chatcmpl-1"]["reply"] == "Noted, I am [EMAIL]" and by_id["chatcmpl-1"]["pii"] == {"email": 2}
    assert by_id["chatcmpl-2"]["messages"][0]["content"] == "I am ana@example.com"
    assert by_id["chatcmpl-2"]["redacted"] is False and by_id["chatcmpl-2"]["pii"] == {"email": 2}
    assert feedback == []
    tables = set(inspect(Store(url).engine).get_table_names())
    assert {"requests", "feedback", "alembic_version"} <= tables
    assert read_tables(url, since=utcnow() + timedelta(minutes=1)) == ([], [])


def test_store_urls_and_since():
    assert store_url(None, __import__("pathlib").Path("/x/runs")) == "sqlite:////x/runs/serve.db"
    assert store_url("postgresql+psycopg://u@h/db", None) == "postgresql+psycopg://u@h/db"
    with pytest.raises(ConfigError, match="--store"):
        Store("nosuchdialect://x")
    assert abs((datetime.now(timezone.utc) - parse_since("2h")) - timedelta(hours=2)) < timedelta(seconds=5)
    assert parse_since("2026-01-31") == datetime(2026, 1, 31, tzinfo=timezone.utc)
    with pytest.raises(ConfigError, match="--since"):
        parse_since("yesterday")


def test_a_nul_in_a_reply_is_stored_on_postgresql_and_newest_promotions(postgres_url):
    store = Store(postgres_url)
    # A small model's byte-level decoding emits NUL now and then; PostgreSQL's text refuses it outright.
    record(store, "chatcmpl-nul", "odd\x00byte")
    assert store.newest_promotions(["m"]) == {}
    for run_dir in ("runs/a", "runs/b"):
        store.record_promotion("m", "promote", run_dir, run_dir[-1], None, "host:1")
    store.record_promotion("other", "rollback", "runs/c", "c", "d", "host:2")
    newest = store.newest_promotions(["m", "other", "unknown"])
    store.close()
    (row,) = read_tables(postgres_url)[0]
    assert row["messages"][0]["content"] == "odd\ufffdbyte" and row["reply"] == "Noted, odd\ufffdbyte"
    assert {model: (found["run_dir"], found["action"]) for model, found in newest.items()} == {
        "m": ("runs/b", "promote"), "other": ("runs/c", "rollback")}
    assert {"loops", "promotions"} <= set(inspect(Store(postgres_url).engine).get_table_names())
