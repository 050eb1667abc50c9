"""Feedback export rules: corrections, pairs, unpaired ratings, conflicts, and leakage of the frozen test set."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from tuneloop.feedback.export import Feedback, PairwisePick, export_feedback, rating_sign

SYSTEM = {"role": "system", "content": "You are the customer assistant."}
T0 = datetime(2026, 11, 1, 12, 0)


def conversation(question: str) -> tuple[dict, ...]:
    return (SYSTEM, {"role": "user", "content": question})


def item(question, reply, user, rating=None, correction=None, minutes=0, request_id=None):
    return Feedback(request_id or f"chatcmpl-{user}-{minutes}-{question[:5]}", conversation(question), reply,
                    "quickstart", user=user, rating=rating, correction=correction,
                    created_at=T0 + timedelta(minutes=minutes))


def read(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_ratings_map_to_signs():
    assert [rating_sign(r) for r in ("up", "down", "5", "4", "3", "2", "1", None, 5, 1)] == \
        [1, -1, 1, 1, 0, -1, -1, 0, 1, -1]


def test_a_correction_becomes_an_sft_row_a_preference_pair_and_kto_rows(tmp_path):
    summary = export_feedback(
        [item("How long is a fitting?", "About an hour.", "ana", "down", "A fitting takes 50 minutes.")],
        [], tmp_path)
    sft = read(tmp_path / "sft.jsonl")
    assert sft == [{"messages": [SYSTEM, {"role": "user", "content": "How long is a fitting?"},
                                 {"role": "assistant", "content": "A fitting takes 50 minutes."}]}]
    assert read(tmp_path / "preference.jsonl") == [{"prompt": list(conversation("How long is a fitting?")),
                                                    "chosen": "A fitting takes 50 minutes.",
                                                    "rejected": "About an hour."}]
    kto = {(row["completion"], row["label"]) for row in read(tmp_path / "kto.jsonl")}
    assert kto == {("A fitting takes 50 minutes.", True), ("About an hour.", False)}
    assert summary["sft_rows"] == 1 and summary["preference_rows"] == 1 and summary["kto_rows"] == 2


def test_thumbs_up_replies_are_kept_apart_and_unpaired_ratings_feed_kto(tmp_path):
    export_feedback([item("Where is the office?", "In Bergen.", "ana", "up"),
                     item("What is the fee?", "It is $5.", "bo", "down")], [], tmp_path)
    assert read(tmp_path / "sft.jsonl") == []
    assert [row["messages"][-1]["content"] for row in read(tmp_path / "thumbs_up.jsonl")] == ["In Bergen."]
    assert {(row["completion"], row["label"]) for row in read(tmp_path / "kto.jsonl")} == \
        {("In Bergen.", True), ("It is $5.", False)}


def test_the_correction_most_users_gave_wins_and_ties_go_to_the_latest(tmp_path):
    question = "How long is the warranty?"
    summary = export_feedback([
        item(question, "Two years.", "ana", "down", "Seven years.", minutes=1),
        item(question, "Two years.", "bo", "down", "Seven years.", minutes=2),
        item(question, "Two years.", "cy", "down", "Ten years.", minutes=3),
        item("Another?", "x", "ana", "down", "First answer.", minutes=1),
        item("Another?", "x", "bo", "down", "Second answer.", minutes=5),
    ], [], tmp_path)
    replies = {row["messages"][1]["content"]: row["messages"][-1]["content"] for row in read(tmp_path / "sft.jsonl")}
    assert replies == {question: "Seven years.", "Another?": "Second answer."}
    assert summary["overruled_corrections"] == 2


def test_prompts_differing_only_in_case_and_spacing_are_one_prompt(tmp_path):
    summary = export_feedback([item("Where is the office?", "Oslo.", "ana", "down", "Bergen."),
                               item("where is   the office?", "Oslo.", "bo", "down", "Bergen.")], [], tmp_path)
    assert summary["prompts"] == 1 and summary["sft_rows"] == 1


def test_a_reply_rated_up_and_down_by_as_many_users_is_a_conflict_and_dropped(tmp_path):
    summary = export_feedback([item("Q?", "A.", "ana", "up"), item("Q?", "A.", "bo", "down"),
                               item("Q?", "A.", "ana", "up", minutes=2)], [], tmp_path)
    assert summary["conflicting_ratings"] == 1
    assert read(tmp_path / "kto.jsonl") == [] and read(tmp_path / "thumbs_up.jsonl") == []
    # A user changing their mind counts once, with their latest rating.
    summary = export_feedback([item("Q?", "A.", "ana", "up"), item("Q?", "A.", "ana", "down", minutes=3)],
                              [], tmp_path / "again")
    assert summary["conflicting_ratings"] == 0
    assert [row["label"] for row in read(tmp_path / "again" / "kto.jsonl")] == [False]


def test_pairwise_picks_become_preference_rows_by_majority(tmp_path):
    messages = conversation("Which bike for hills?")
    summary = export_feedback([], [
        PairwisePick(messages, "The Scree.", "The Pebble.", "ana"),
        PairwisePick(messages, "The Scree.", "The Pebble.", "bo"),
        PairwisePick(messages, "The Pebble.", "The Scree.", "cy"),
        PairwisePick(conversation("Tie?"), "a", "b", "ana"),
        PairwisePick(conversation("Tie?"), "b", "a", "bo"),
    ], tmp_path)
    assert read(tmp_path / "preference.jsonl") == [{"prompt": list(messages), "chosen": "The Scree.",
                                                    "rejected": "The Pebble."}]
    assert summary["conflicting_pairs"] == 1


def test_feedback_on_a_copy_of_a_frozen_test_question_is_dropped_and_counted(tmp_path):
    test_rows = [{"messages": [SYSTEM, {"role": "user", "content": "If I change my mind, how long do I have to "
                                                                      "send my order back?"},
                               {"role": "assistant", "content": "45 days."}]}]
    summary = export_feedback([
        item("If I change my mind, how long do I have to send my order back?", "30 days.", "ana", "down", "45 days."),
        item("if i change my mind, how long do i have to send my order back??", "30 days.", "bo", "down", "45 days."),
        item("How long is a fitting?", "An hour.", "cy", "down", "50 minutes."),
    ], [PairwisePick(conversation("If I change my mind, how long do I have to send my order back?"), "a", "b")],
        tmp_path, test_rows=test_rows)
    assert summary["leaked_prompts"] == 2 and summary["leaked_feedback"] == 3
    assert [row["messages"][1]["content"] for row in read(tmp_path / "sft.jsonl")] == ["How long is a fitting?"]
    assert json.loads((tmp_path / "summary.json").read_text())["leaked_feedback"] == 3


def test_empty_replies_are_left_out_of_preference_and_kto_rows_and_counted(tmp_path):
    messages = conversation("Where is the pump?")
    summary = export_feedback([
        Feedback("r1", messages, "", "bot", user="ana", rating="down", correction="By the door."),
        Feedback("r2", conversation("And the oil?"), "  ", "bot", user="bo", rating="up"),
    ], [PairwisePick(conversation("Saddle?"), "", "The Perchwell.", "cy")], tmp_path)
    # The correction of an empty reply is still learned; no row anywhere has an empty reply.
    assert [row["messages"][-1]["content"] for row in read(tmp_path / "sft.jsonl")] == ["By the door."]
    assert read(tmp_path / "preference.jsonl") == []
    assert all(row["completion"].strip() for row in read(tmp_path / "kto.jsonl"))
    assert summary["empty_replies"] == 4  # counted per row left out: a preference and a kto row of r1, one each
