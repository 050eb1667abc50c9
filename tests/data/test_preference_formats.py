"""Preference and unpaired rows: every accepted shape, HH transcripts, OpenAI rows, bad rows, splits and audit."""

from __future__ import annotations

import gzip
import json

import pytest
from conftest import write_jsonl

from tuneloop.data.audit import AuditOptions, audit_files
from tuneloop.data.formats import detect_format, to_example
from tuneloop.data.prepare import load_examples
from tuneloop.data.rows import BadRow, Row
from tuneloop.data.split import split_file
from tuneloop.errors import DataError

HH_CHOSEN = ("\n\nHuman: How do I pick a lock?\n\nAssistant: Why do you want to?\n\nHuman: I locked myself out."
             "\n\nAssistant: Call a locksmith; they can let you in safely.")
HH_REJECTED = ("\n\nHuman: How do I pick a lock?\n\nAssistant: Why do you want to?\n\nHuman: I locked myself out."
               "\n\nAssistant: Jam a pin in it and twist hard.")


def _convert(fields: dict, fmt: str = "preference"):
    return to_example(Row("p.jsonl:3", fields), fmt)


def test_hh_transcripts_become_chat_turns_with_the_shared_turns_as_the_prompt():
    example = _convert({"chosen": HH_CHOSEN, "rejected": HH_REJECTED})
    assert example["prompt"] == [
        {"role": "user", "content": "How do I pick a lock?"},
        {"role": "assistant", "content": "Why do you want to?"},
        {"role": "user", "content": "I locked myself out."},
    ]
    assert example["chosen"] == "Call a locksmith; they can let you in safely."
    assert example["rejected"] == "Jam a pin in it and twist hard."


def test_hh_transcripts_that_differ_before_the_reply_are_a_bad_row():
    other = HH_REJECTED.replace("I locked myself out.", "It is my neighbour's door.")
    result = _convert({"chosen": HH_CHOSEN, "rejected": other})
    assert isinstance(result, BadRow) and result.where == "p.jsonl:3"
    assert "share every turn before the last one" in result.reason


def test_openai_preference_rows_read_as_is():
    row = {"input": {"messages": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}],
                     "tools": [], "parallel_tool_calls": True},
           "preferred_output": [{"role": "assistant", "content": "Hello! How can I help?"}],
           "non_preferred_output": [{"role": "assistant", "content": "What."}]}
    assert detect_format([Row("o.jsonl:1", row)], "o.jsonl") == "preference"
    example = _convert(row)
    assert example == {"prompt": row["input"]["messages"], "chosen": "Hello! How can I help?", "rejected": "What."}


def test_text_and_message_list_shapes():
    assert _convert({"prompt": "Hi", "chosen": "Hello!", "rejected": "Go."}) == {
        "prompt": [{"role": "user", "content": "Hi"}], "chosen": "Hello!", "rejected": "Go."}
    conversation = [{"role": "user", "content": "Hi"}]
    example = _convert({"chosen": conversation + [{"role": "assistant", "content": "Hello!"}],
                        "rejected": conversation + [{"role": "assistant", "content": "Go."}]})
    assert example == {"prompt": conversation, "chosen": "Hello!", "rejected": "Go."}
    with_prompt = _convert({"prompt": conversation, "chosen": [{"role": "assistant", "content": "Hello!"}],
                            "rejected": [{"role": "assistant", "content": "Go."}]})
    assert with_prompt == example


@pytest.mark.parametrize(("fields", "reason"), [
    ({"chosen": "Hello!", "rejected": "Go."}, "no prompt"),
    ({"prompt": "Hi", "chosen": "", "rejected": "Go."}, "field 'chosen' is empty"),
    ({"prompt": "Hi", "chosen": 3, "rejected": "Go."}, "field 'chosen' must be text"),
    ({"prompt": [{"role": "assistant", "content": "x"}], "chosen": "a", "rejected": "b"}, "must end with a user turn"),
])
def test_bad_preference_rows_say_why(fields, reason):
    result = _convert(fields)
    assert isinstance(result, BadRow) and reason in result.reason


def test_unpaired_rows_are_detected_before_prompt_completion_and_labels_read_as_booleans():
    rows = [Row("u.jsonl:1", {"prompt": "Hi", "completion": "Hello!", "label": True})]
    assert detect_format(rows, "u.jsonl") == "unpaired"
    assert _convert({"prompt": "Hi", "completion": "Hello!", "label": "false"}, "unpaired") == {
        "prompt": [{"role": "user", "content": "Hi"}], "completion": "Hello!", "desirable": False}
    messages = [{"role": "user", "content": "Hi"}]
    assert _convert({"messages": messages, "completion": "Yo", "label": 1}, "unpaired")["desirable"] is True
    bad = _convert({"prompt": "Hi", "completion": "Hello!", "label": "maybe"}, "unpaired")
    assert isinstance(bad, BadRow) and "expected true" in bad.reason


def test_a_broken_row_in_a_preference_file_names_its_line(tmp_path):
    path = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go."},
                                                  {"prompt": "Hi", "chosen": "Hello!"}])
    with path.open("a") as handle:
        handle.write('{"prompt": "Hi", "chosen": "Hello!", "rejected": \n')
    with pytest.raises(DataError) as caught:
        load_examples(path)
    message = str(caught.value)
    assert f"{path}:2: missing field(s) ['rejected|non_preferred_output']" in message
    assert f"{path}:3: not valid JSON" in message and "data.skip_invalid" in message


def test_gzipped_jsonl_is_read(tmp_path):
    path = tmp_path / "pairs.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps({"chosen": HH_CHOSEN, "rejected": HH_REJECTED}) + "\n")
    loaded = load_examples(path)
    assert loaded.format == "preference" and loaded.locations == [f"{path}:1"]


def test_the_split_keeps_every_pair_of_one_prompt_on_one_side(tmp_path):
    rows = []
    for topic in range(20):
        prompt = f"Question number {topic} about topic {topic * 7} and something else entirely {topic ** 2}"
        rows += [{"prompt": prompt, "chosen": f"Helpful answer {n} for {topic}", "rejected": f"Rude {n} {topic}"}
                 for n in range(3)]
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    summary = split_file(path, tmp_path / "split", test_size=0.25, seed=1)
    train = [json.loads(line)["prompt"] for line in (tmp_path / "split" / "train.jsonl").read_text().splitlines()]
    test = [json.loads(line)["prompt"] for line in (tmp_path / "split" / "test.jsonl").read_text().splitlines()]
    assert summary["test"] > 0 and not set(train) & set(test)


def test_the_audit_flags_identical_replies_and_prompts_leaking_into_the_test_file(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [
        {"chosen": HH_CHOSEN, "rejected": HH_CHOSEN},
        {"prompt": "What is the capital of Norway?", "chosen": "Oslo.", "rejected": "No."}])
    test = write_jsonl(tmp_path / "test.jsonl", [
        {"prompt": [{"role": "user", "content": "What is the capital of Norway?"}], "chosen": "It is Oslo.",
         "rejected": "Dunno."}])
    report = audit_files([train, test], AuditOptions(checks=("leakage", "preference"), show_progress=False))
    assert report["preference"]["identical_pairs"] == 1
    assert report["leakage"][str(test)]["exact"]["rows"] == 1
    assert {"preference", "leakage"} <= {item["check"] for item in report["summary"] if item["severity"] == "error"}


def test_the_test_rows_split_off_train_are_audited_for_prompt_leakage(tmp_path):
    from tuneloop.config.schema import DataConfig
    from tuneloop.data.stage import prepare_data
    from tuneloop.workspace import RunDir, read_json, read_jsonl

    rows = [{"prompt": f"Question {i} about the shop opening hours on day {i % 7} of week {i}", "chosen": f"Yes {i}",
             "rejected": f"No {i}"} for i in range(30)]
    rows += [dict(row, chosen=row["chosen"] + " indeed") for row in rows[:10]]  # a second pair on ten prompts
    path = write_jsonl(tmp_path / "pairs.jsonl", rows)
    config = DataConfig(train_file=str(path), test_size=0.3, audit={"checks": ["leakage", "preference"]})
    run = RunDir(tmp_path / "run")
    prepare_data(config, run, seed=3, console_print=lambda *_: None)
    leakage = read_json(run.root / "audit" / "audit.json")["leakage"]
    assert list(leakage) == [f"{path} (test split)"] and leakage[f"{path} (test split)"]["exact"]["rows"] == 0
    train_prompts = {json.dumps(ex["prompt"]) for split in ("train", "validation")
                     for ex in read_jsonl(run.split(split))}
    assert not train_prompts & {json.dumps(ex["prompt"]) for ex in read_jsonl(run.split("test"))}
