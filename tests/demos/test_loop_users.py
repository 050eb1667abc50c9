"""The loop demo's scripted users obey the rules its before/after table relies on."""

from __future__ import annotations

import json
import re

from tuneloop.demos.loop_users import (
    ADVERSARIAL_CORRECTIONS,
    NEW_FACTS,
    adversarial_user,
    curious_user,
    helpful_users,
    paraphrase_rows,
    write_loop_demo_data,
)
from tuneloop.demos.quickstart import FACTS


def _normalize_question(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def test_new_facts_are_not_taught_by_the_quickstart():
    taught = {fact.topic for fact in FACTS}
    assert not taught & {fact.topic for fact in NEW_FACTS}
    statements = " ".join(fact.statement.lower() for fact in FACTS)
    assert not [fact.answer for fact in NEW_FACTS if fact.answer.lower() in statements]


def test_paraphrases_are_never_questions_users_send():
    sent = {_normalize_question(q.question) for q in helpful_users() + adversarial_user() + curious_user()}
    held_out = [_normalize_question(row["messages"][1]["content"]) for row in paraphrase_rows()]
    assert len(held_out) == 2 * len(NEW_FACTS)
    assert not sent & set(held_out)


def test_helpful_corrections_carry_the_answer_and_the_adversary_never_does():
    assert all(q.answer in q.correction for q in helpful_users())
    right = {fact.topic: fact.answer for fact in FACTS}
    for question in adversarial_user():
        assert right[question.topic].lower() not in question.correction.lower()
    assert {q.topic for q in adversarial_user()} == set(ADVERSARIAL_CORRECTIONS)


def test_the_curious_user_copies_the_frozen_test_set_word_for_word():
    test_questions = {q for fact in FACTS for q in fact.test_questions}
    assert curious_user() and all(q.question in test_questions for q in curious_user())


def test_files_are_written(tmp_path):
    paths = write_loop_demo_data(tmp_path)
    rows = [json.loads(line) for line in paths["helpful"].read_text().splitlines()]
    assert len(rows) == 6 * len(NEW_FACTS) and {"user", "question", "correction", "answer"} <= set(rows[0])
