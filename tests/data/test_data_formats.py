"""Format detection and conversion of chat, alpaca, prompt_completion, summarization and text rows to canonical
examples."""

from __future__ import annotations

from pathlib import Path

import pytest

from tuneloop.data.formats import detect_format, to_example
from tuneloop.data.rows import BadRow, Row
from tuneloop.errors import DataError

WHERE = "d.jsonl:7"


def _row(**fields) -> Row:
    return Row(WHERE, fields)


def _chat(*pairs: tuple[str, object]) -> Row:
    return _row(messages=[{"role": role, "content": content} for role, content in pairs])


def _bad_reason(row: Row, fmt: str) -> str:
    result = to_example(row, fmt)
    assert isinstance(result, BadRow)
    assert result.where == WHERE
    return result.reason


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"messages": []}, "chat"),
        ({"instruction": "i", "output": "o"}, "alpaca"),
        ({"instruction": "i", "input": "x", "output": "o"}, "alpaca"),
        ({"prompt": "p", "completion": "c"}, "prompt_completion"),
        ({"fname": "f", "dialogue": "d", "summary": "s", "topic": "t"}, "summarization"),
        ({"article": "a", "highlights": "h"}, "summarization"),
        ({"source": "s", "target": "t"}, "summarization"),
        ({"document": "d", "summary1": "s", "summary2": "s2"}, "summarization"),
        ({"text": "t", "label": "l"}, "classification"),
        ({"text": "t"}, "text"),
        ({"text": "t", "summary": "s"}, "text"),  # "text" is not a document column: such rows stay plain text
    ],
)
def test_detect_format_recognises_each_format(fields, expected):
    assert detect_format([Row(WHERE, fields)], "d.jsonl") == expected


def test_detect_format_looks_only_at_the_first_row():
    rows = [Row("d.jsonl:1", {"text": "t"}), Row("d.jsonl:2", {"prompt": "p", "completion": "c"})]
    assert detect_format(rows, "d.jsonl") == "text"


def test_detect_format_unknown_columns_names_columns_and_the_setting():
    with pytest.raises(DataError) as caught:
        detect_format([Row(WHERE, {"question": "q", "reply": "r"})], "d.jsonl")
    message = str(caught.value)
    assert WHERE in message
    assert "['question', 'reply']" in message
    assert "data.format" in message
    assert "prompt_completion (prompt, completion)" in message


def test_detect_format_without_rows_says_so():
    with pytest.raises(DataError, match="d.jsonl: no rows"):
        detect_format([], "d.jsonl")


def test_alpaca_without_input_uses_the_instruction_as_the_user_turn():
    example = to_example(_row(instruction="Name a colour.", output="Blue."), "alpaca")
    assert example == {"messages": [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": "Blue."},
    ]}


def test_alpaca_input_is_appended_after_a_blank_line():
    row = _row(instruction="Translate to English.", input="  bonjour \n", output="hello")
    example = to_example(row, "alpaca")
    assert example["messages"][0] == {"role": "user", "content": "Translate to English.\n\nbonjour"}


@pytest.mark.parametrize("blank", ["", "   ", None])
def test_alpaca_blank_input_is_left_out(blank):
    example = to_example(_row(instruction="Say hi.", input=blank, output="hi"), "alpaca")
    assert example["messages"][0]["content"] == "Say hi."


def test_alpaca_system_field_becomes_the_first_message():
    example = to_example(_row(system="Be brief.", instruction="Say hi.", output="hi"), "alpaca")
    assert [m["role"] for m in example["messages"]] == ["system", "user", "assistant"]
    assert example["messages"][0]["content"] == "Be brief."


def test_alpaca_non_text_input_is_a_bad_row():
    assert "'input' must be text" in _bad_reason(_row(instruction="i", input=["x"], output="o"), "alpaca")


def test_prompt_completion_becomes_a_user_and_assistant_turn():
    example = to_example(_row(prompt="2+2?", completion="4"), "prompt_completion")
    assert example == {"messages": [
        {"role": "user", "content": "2+2?"},
        {"role": "assistant", "content": "4"},
    ]}


def test_text_row_stays_plain_text():
    assert to_example(_row(text="Once upon a time."), "text") == {"text": "Once upon a time."}


def test_missing_required_field_is_a_bad_row_naming_it():
    reason = _bad_reason(_row(prompt="p"), "prompt_completion")
    assert "['completion']" in reason
    assert "prompt_completion" in reason


def test_non_text_field_is_a_bad_row_naming_field_and_type():
    reason = _bad_reason(_row(prompt=5, completion="c"), "prompt_completion")
    assert "'prompt'" in reason
    assert "int" in reason


def test_empty_field_is_a_bad_row():
    assert "'completion' is empty" in _bad_reason(_row(prompt="p", completion="  "), "prompt_completion")


def test_valid_chat_keeps_roles_and_content_and_drops_extra_keys():
    row = _row(messages=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi", "name": "ann"},
        {"role": "assistant", "content": "Hello"},
    ])
    assert to_example(row, "chat") == {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
    ]}


def test_chat_whose_last_message_is_not_the_assistant_is_a_bad_row():
    reason = _bad_reason(_chat(("user", "Hi"), ("assistant", "Hello"), ("user", "Bye")), "chat")
    assert "last message must be the assistant" in reason


def test_chat_with_unknown_role_is_a_bad_row_naming_role_and_index():
    reason = _bad_reason(_chat(("user", "Hi"), ("bot", "Hello")), "chat")
    assert "messages[1].role" in reason
    assert "'bot'" in reason
    assert "system, developer, user, assistant, tool" in reason


@pytest.mark.parametrize("content", ["", "  \n", None, 3])
def test_chat_with_empty_or_non_text_content_is_a_bad_row(content):
    reason = _bad_reason(_chat(("user", content), ("assistant", "Hello")), "chat")
    assert "messages[0].content must be non-empty text" in reason


def test_chat_without_a_user_message_is_a_bad_row():
    assert "no user message" in _bad_reason(_chat(("system", "Be brief."), ("assistant", "Hello")), "chat")


@pytest.mark.parametrize("messages", [[], "Hi there", {"role": "user", "content": "Hi"}])
def test_chat_messages_must_be_a_non_empty_list(messages):
    assert "non-empty list" in _bad_reason(_row(messages=messages), "chat")


def test_chat_message_that_is_not_an_object_is_a_bad_row():
    reason = _bad_reason(_row(messages=[{"role": "user", "content": "Hi"}, "Hello"]), "chat")
    assert "messages[1] must be an object" in reason


@pytest.mark.parametrize(
    ("fmt", "fields"),
    [
        ("chat", {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}),
        ("alpaca", {"instruction": "q", "output": "a"}),
        ("prompt_completion", {"prompt": "q", "completion": "a"}),
        ("text", {"text": "q a"}),
    ],
)
def test_answer_field_is_kept_as_a_string_in_every_format(fmt, fields):
    assert to_example(_row(**fields, answer=42), fmt)["answer"] == "42"


def test_answer_that_is_null_is_dropped():
    assert "answer" not in to_example(_row(prompt="q", completion="a", answer=None), "prompt_completion")


def test_unknown_extra_fields_are_not_carried_over():
    example = to_example(_row(prompt="q", completion="a", source="web"), "prompt_completion")
    assert set(example) == {"messages"}


def test_summarization_row_becomes_a_request_and_the_summary_as_reply():
    example = to_example(_row(dialogue="#Person1#: Hi.\n#Person2#: Hello. ", summary=" They greet. ", topic="x"),
                         "summarization")
    assert example == {"messages": [
        {"role": "user", "content": "Summarize the following text in a few sentences.\n\n#Person1#: Hi.\n"
                                    "#Person2#: Hello."},
        {"role": "assistant", "content": "They greet."},
    ]}


@pytest.mark.parametrize(("instruction", "expected"), [("TL;DR:", "TL;DR:\n\nA long text."), ("", "A long text.")])
def test_summary_instruction_is_configurable_and_may_be_empty(instruction, expected):
    example = to_example(_row(article="A long text.", highlights="Short."), "summarization", instruction)
    assert example["messages"][0]["content"] == expected


def test_summarization_row_without_a_summary_names_the_accepted_columns():
    reason = _bad_reason(_row(dialogue="d", topic="t"), "summarization")
    assert "summary|target|highlights|summary1" in reason
    assert "is empty" in _bad_reason(_row(dialogue="  ", summary="s"), "summarization")


DIALOGUES = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "dialogsum"


@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_dialogue_summaries_from_the_shared_datasets_are_detected_as_summarization(split):
    if not DIALOGUES.is_dir():
        pytest.skip(f"{DIALOGUES} is absent: the shared datasets folder is not mounted here")
    from tuneloop.data.prepare import load_examples

    loaded = load_examples(DIALOGUES / f"dialogsum.{split}.jsonl", max_rows=20)
    assert loaded.format == "summarization" and len(loaded.examples) == 20
    user, reply = loaded.examples[0]["messages"]
    assert "#Person1#:" in user["content"] and reply["content"]
