"""Paraphrasing corrections into training rows: what is kept, what is dropped and why, on a scripted generator."""

from __future__ import annotations

import pytest
from conftest import chat_row

from tuneloop.data.augment import PARAPHRASE_PROMPT
from tuneloop.errors import DataError
from tuneloop.feedback.paraphrase import DROP_REASONS, describe, drop_reason, paraphrase_corrections

QUESTION = "Which colour is the staff van?"
CORRECTION = "The staff van is teal."


class ScriptedGenerator:
    """A TextGenerator whose replies are chosen by the test: one list of replies per call, in order."""

    def __init__(self, *calls: list[str]) -> None:
        self.calls = list(calls)
        self.texts: list[list[str]] = []  # what each call was asked to reword

    def generate(self, prompts: list[str]) -> list[str]:
        self.texts.append([prompt.removeprefix(PARAPHRASE_PROMPT.format(text="")) for prompt in prompts])
        return self.calls.pop(0)


def test_a_paraphrase_rewords_the_question_and_keeps_the_correction():
    row = chat_row(QUESTION, CORRECTION)
    generator = ScriptedGenerator(["What colour does the staff van have?"], ["The staff van: what colour is it?"])
    copies, counts = paraphrase_corrections([row], 2, generator)
    assert [index for index, _ in copies] == [0, 0]
    for _, copy in copies:
        assert copy["messages"][0] == row["messages"][0]  # the system prompt stays
        assert copy["messages"][-1] == {"role": "assistant", "content": CORRECTION}
        assert copy["messages"][1]["content"] != QUESTION
        assert copy["augmented"] == {"method": "paraphrase", "source_row": 1}
    assert row["messages"][1]["content"] == QUESTION  # the original is not touched
    # The second copy rewords the first: greedy decoding would only repeat itself on the same prompt.
    assert generator.texts == [[QUESTION], ["What colour does the staff van have?"]]
    assert counts == {"rows": 1, "per_row": 2, "asked": 2, "kept": 2, "dropped": {}}


def test_bad_paraphrases_are_dropped_and_counted_by_reason():
    rows = [chat_row(QUESTION, CORRECTION), chat_row("When does the night shift start?", "At 22:00.")]
    rambling = "The staff van is a vehicle used by the staff, and its colour has been discussed at length. " * 2
    generator = ScriptedGenerator(
        ["   ", "  when does the NIGHT shift   start? "],  # blank; the same question after normalization
        [rambling, '"At what time does the night shift begin?"'],  # over 3x longer; quoted (quotes come off)
        ["What colour is the staff van painted?", "at what time does the night shift begin?"],  # new; a repeat
    )
    copies, counts = paraphrase_corrections(rows, 3, generator)
    questions = [(index, copy["messages"][1]["content"]) for index, copy in copies]
    assert questions == [(0, "What colour is the staff van painted?"), (1, "At what time does the night shift begin?")]
    assert counts["kept"] == 2 and counts["asked"] == 6
    assert counts["dropped"] == {"blank": 1, "same as the question": 1, "over 3x longer": 1,
                                 "repeats a kept paraphrase": 1}
    assert "2 kept, 4 dropped (1 blank" in describe(counts)


def test_a_paraphrase_copying_a_protected_question_is_dropped():
    held_out = "What colour is the staff van?"
    generator = ScriptedGenerator(["what colour is the staff van?"], ["Tell me the colour of the staff van."])
    copies, counts = paraphrase_corrections([chat_row(QUESTION, CORRECTION)], 2, generator, protected=[held_out])
    assert [copy["messages"][1]["content"] for _, copy in copies] == ["Tell me the colour of the staff van."]
    assert counts["dropped"] == {DROP_REASONS[4]: 1}


def test_the_filter_rules_one_by_one():
    assert drop_reason(QUESTION, "") == "blank"
    assert drop_reason(QUESTION, "WHICH colour is  the staff van?") == "same as the question"
    assert drop_reason(QUESTION, "x" * (3 * len(QUESTION) + 1)) == "over 3x longer"
    assert drop_reason(QUESTION, "x" * (3 * len(QUESTION))) is None
    assert drop_reason(QUESTION, "What colour is the van?", kept=["what colour is the van?"]) == \
        "repeats a kept paraphrase"
    assert drop_reason(QUESTION, "What colour is the van?") is None


def test_a_generator_that_answers_the_wrong_number_of_prompts_is_an_error():
    with pytest.raises(DataError, match="answered 0 of 1"):
        paraphrase_corrections([chat_row(QUESTION, CORRECTION)], 1, ScriptedGenerator([]))
    with pytest.raises(DataError, match="correction as its last"):
        paraphrase_corrections([{"messages": [{"role": "user", "content": QUESTION}]}], 1, ScriptedGenerator([]))
