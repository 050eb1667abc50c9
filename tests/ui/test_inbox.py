"""The inbox's decisions in the store decide what `feedback export` takes: accepted (--reviewed), never discarded."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from tuneloop.errors import TuneloopError
from tuneloop.feedback.store_reader import read_feedback
from tuneloop.serve.store import Store, utcnow
from tuneloop.ui import inbox

MESSAGES = [{"role": "user", "content": "When do the stores open?"}]


def answered(store: Store, request_id: str) -> None:
    now = utcnow()
    store.record_request(id=request_id, created_at=now, finished_at=now, endpoint="chat", model="tiny",
                         variant="tiny", messages=MESSAGES, reply="At noon.", status=200)


def test_accept_edit_and_discard_decide_the_export(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'serve.db'}")
    for request_id in ("a", "b", "c"):
        answered(store, request_id)
    accepted = store.record_feedback("rating", "a", rating="down", score=0.0, correction="They open at 7:30.")
    edited = store.record_feedback("rating", "b", rating="down", score=0.0, correction="7.30")
    discarded = store.record_feedback("rating", "c", rating="down", score=0.0, correction="Never!")
    store.record_feedback("rating", "a", rating="up", score=1.0)  # a thumbs-up is not in the inbox

    items = inbox.inbox_items(store)
    assert {item.id for item in items} == {accepted, edited, discarded}
    assert all(item.review is None for item in items)
    assert inbox.counts_since(store, None)["to_review"] == 3
    assert read_feedback(store.url, reviewed_only=True) == ([], [])  # nothing reviewed yet

    inbox.review(store, accepted, "accepted")
    inbox.review(store, edited, "accepted", "They open at 7:30 every day.")
    inbox.review(store, discarded, "discarded")

    reviewed, _ = read_feedback(store.url, reviewed_only=True)
    assert sorted(f.correction for f in reviewed) == ["They open at 7:30 every day.", "They open at 7:30."]
    everything, _ = read_feedback(store.url)  # the unattended loop's export: all but the discarded row
    assert "Never!" not in {f.correction for f in everything} and len(everything) == 3
    edited_item = next(item for item in inbox.inbox_items(store) if item.id == edited)
    assert edited_item.original_correction == "7.30" and edited_item.review == "accepted"
    counts = inbox.counts_since(store, None)
    assert (counts["accepted"], counts["discarded"], counts["to_review"]) == (2, 1, 0)


def test_accepting_a_thumbs_down_without_a_correction_says_what_to_do(tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'serve.db'}")
    answered(store, "a")
    bare = store.record_feedback("rating", "a", rating="down", score=0.0)
    with pytest.raises(TuneloopError, match="no correction yet"):
        inbox.review(store, bare, "accepted")
    with pytest.raises(TuneloopError, match="no such item"):
        inbox.review(store, 999, "discarded")


def test_an_existing_store_gains_the_review_columns(tmp_path):
    """A serve.db written before the inbox existed (revision 0001) is migrated in place when opened."""
    from alembic import command
    from alembic.config import Config
    from sqlalchemy import create_engine

    from tuneloop.serve.store import MIGRATIONS

    engine = create_engine(f"sqlite:///{tmp_path / 'old.db'}")
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    assert "review" not in {c["name"] for c in inspect(engine).get_columns("feedback")}
    engine.dispose()
    store = Store(f"sqlite:///{tmp_path / 'old.db'}")
    assert {"review", "reviewed_at", "original_correction"} <= {c["name"] for c in
                                                              inspect(store.engine).get_columns("feedback")}
