"""The chat shapes people have: ShareGPT, OpenAI's full fine-tuning format (per-turn weight, tools, tool calls,
tool messages, parallel_tool_calls), saved Hugging Face datasets and folders of shards; rejected rows say why."""

from __future__ import annotations

import json

import pytest
from conftest import write_jsonl
from typer.testing import CliRunner

from tuneloop.data.encode import IGNORE_INDEX, EncodeStats, encode_example
from tuneloop.data.prepare import load_examples
from tuneloop.errors import DataError

WEATHER_TOOL = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                                 "parameters": {"type": "object",
                                                                "properties": {"city": {"type": "string"}}}}}
SHAREGPT = {
    "system": "You help customers.",
    "tools": json.dumps([WEATHER_TOOL["function"]]),
    "conversations": [
        {"from": "human", "value": "Is it raining in Bergen?"},
        {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": "Bergen"}})},
        {"from": "observation", "value": "rain, 9 C"},
        {"from": "gpt", "value": "Yes, it is raining in Bergen."},
    ],
}


def openai_row(first_weight: int = 0) -> dict:
    return {"messages": [
        {"role": "system", "content": "You help customers."},
        {"role": "user", "content": "Where is the head office?"},
        {"role": "assistant", "content": "It is in Oslo.", "weight": first_weight},
        {"role": "user", "content": "Are you sure?"},
        {"role": "assistant", "content": "Sorry: the head office is in Bergen.", "weight": 1},
        {"role": "user", "content": "What does a tune-up cost?"},
        {"role": "assistant", "content": "A tune-up costs $65."},
    ]}


def tool_row(parallel: bool | None = None, calls: int = 1) -> dict:
    tool_calls = [{"id": f"call_{i}", "type": "function",
                   "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}
                  for i, city in enumerate(["Bergen", "Oslo"][:calls])]
    row = {"tools": [WEATHER_TOOL], "messages": [
        {"role": "user", "content": [{"type": "text", "text": "Weather in Bergen?"}]},
        {"role": "assistant", "content": None, "tool_calls": tool_calls},
        *[{"role": "tool", "tool_call_id": f"call_{i}", "content": "rain"} for i in range(calls)],
        {"role": "assistant", "content": "It rains."},
    ]}
    if parallel is not None:
        row["parallel_tool_calls"] = parallel
    return row


def _load(tmp_path, rows, **options):
    return load_examples(write_jsonl(tmp_path / "d.jsonl", rows), **options)


def test_sharegpt_rows_become_chat_examples_with_system_tools_calls_and_results(tmp_path):
    short = {"messages": [{"from": "user", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
    loaded = _load(tmp_path, [SHAREGPT, short])
    assert loaded.format == "chat"
    first, second = loaded.examples
    assert [m["role"] for m in first["messages"]] == ["system", "user", "assistant", "tool", "assistant"]
    call = first["messages"][2]["tool_calls"][0]["function"]
    assert call == {"name": "get_weather", "arguments": {"city": "Bergen"}}
    assert first["tools"][0]["function"]["name"] == "get_weather"
    assert second["messages"] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]


def test_openai_rows_keep_tool_calls_parse_arguments_and_check_parallel_calls(tmp_path):
    example = _load(tmp_path, [tool_row()]).examples[0]
    assert example["messages"][0]["content"] == "Weather in Bergen?"  # content parts joined
    assert example["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"city": "Bergen"}
    assert example["messages"][2] == {"role": "tool", "content": "rain", "tool_call_id": "call_0"}
    with pytest.raises(DataError, match=r"d.jsonl:1: messages\[1\] makes 2 tool calls but the row sets "
                                        "parallel_tool_calls: false"):
        _load(tmp_path, [tool_row(parallel=False, calls=2)])
    assert len(_load(tmp_path, [tool_row(parallel=True, calls=2)]).examples[0]["messages"]) == 5


def _trained_text(tokenizer, encoded) -> str:
    return tokenizer.decode([t for t, label in zip(encoded["input_ids"], encoded["labels"], strict=True)
                             if label != IGNORE_INDEX])


def test_weight_zero_turn_gets_no_loss_and_every_other_reply_is_trained(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    weighted = _load(tmp_path, [openai_row(first_weight=0)]).examples[0]
    assert weighted["messages"][2]["weight"] == 0 and "weight" not in weighted["messages"][4]
    encoded = encode_example(tokenizer, weighted, 256, False, EncodeStats())
    trained = _trained_text(tokenizer, encoded)
    assert "Oslo" not in trained  # the turn weighted 0
    assert "Sorry: the head office is in Bergen." in trained and "A tune-up costs $65." in trained
    assert "Are you sure?" not in trained  # prompts stay unlearned
    # The same row with weight 1 trains that turn too: the labels differ exactly there.
    full = encode_example(tokenizer, _load(tmp_path, [openai_row(first_weight=1)]).examples[0], 256, False,
                          EncodeStats())
    assert full["input_ids"] == encoded["input_ids"]
    assert "It is in Oslo." in _trained_text(tokenizer, full)
    assert sum(label != IGNORE_INDEX for label in full["labels"]) > sum(
        label != IGNORE_INDEX for label in encoded["labels"])
    # train_on_prompt trains the prompts, still not the turn weighted 0.
    everything = _trained_text(tokenizer, encode_example(tokenizer, weighted, 256, True, EncodeStats()))
    assert "Are you sure?" in everything and "Oslo" not in everything


def test_weight_must_be_zero_or_one_on_assistant_turns_and_leave_something_to_learn(tmp_path):
    row = openai_row()
    row["messages"][2]["weight"] = 0.5
    with pytest.raises(DataError, match=r"messages\[2\].weight is 0.5; allowed: 0"):
        _load(tmp_path, [row])
    only_zero = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo", "weight": 0}]}
    with pytest.raises(DataError, match="every assistant turn has weight 0"):
        _load(tmp_path, [only_zero])


def test_tool_calls_render_natively_when_the_template_supports_tools(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = (
        "{% if tools %}<|im_start|>system\nTOOLS:{% for t in tools %} {{ t['function']['name'] }}{% endfor %}"
        "<|im_end|>\n{% endif %}{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}"
        "{% if m.get('tool_calls') %}{% for c in m['tool_calls'] %}CALL {{ c['function']['name'] }}"
        "{{ c['function']['arguments'] | tojson }}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    stats = EncodeStats()
    encoded = encode_example(tokenizer, _load(tmp_path, [tool_row()]).examples[0], 4096, False, stats)
    text = tokenizer.decode(encoded["input_ids"])
    assert "TOOLS: get_weather" in text and "<|im_start|>tool\nrain" in text
    assert 'CALL get_weather{"city": "Bergen"}' in _trained_text(tokenizer, encoded)  # the call is learned
    assert stats.tools_as_text == 0


def test_tool_calls_are_written_as_text_for_a_template_without_tool_support(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)  # plain ChatML: only content is rendered
    stats = EncodeStats()
    encoded = encode_example(tokenizer, _load(tmp_path, [tool_row(calls=2, parallel=True)]).examples[0], 4096,
                             False, stats)
    text = tokenizer.decode(encoded["input_ids"])
    assert "<tools>" in text and '"name": "get_weather"' in text
    assert "<|im_start|>user\n<tool_response>\nrain\n</tool_response>\n<tool_response>\nrain" in text  # one turn
    trained = _trained_text(tokenizer, encoded)
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>' in trained
    assert "<tool_response>" not in trained and stats.tools_as_text == 1


def test_rejected_rows_are_listed_with_file_line_and_reason(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None}]},
            {"conversations": [{"from": "alien", "value": "x"}]}]
    with pytest.raises(DataError) as caught:
        _load(tmp_path, rows, skip_invalid=True)
    message = str(caught.value)
    assert "no usable examples (2 malformed row(s))" in message
    assert "d.jsonl:1: messages[1].content must be non-empty text (or the message must have tool_calls)" in message
    assert "d.jsonl:2: conversations[0].from is 'alien'" in message


def test_saved_datasets_and_folders_of_shards_are_read_as_train_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from datasets import Dataset, DatasetDict

    rows = [openai_row(1), tool_row()]
    plain = [{"messages": row["messages"]} for row in rows[:1]] * 3
    Dataset.from_list(plain).save_to_disk(str(tmp_path / "saved"))
    DatasetDict({"train": Dataset.from_list(plain), "test": Dataset.from_list(plain[:1])}).save_to_disk(
        str(tmp_path / "dict"))
    assert len(load_examples(tmp_path / "saved").examples) == 3
    loaded = load_examples(tmp_path / "dict")
    assert len(loaded.examples) == 3 and loaded.locations[0] == f"{tmp_path / 'dict'}[row 1]"
    assert len(load_examples(tmp_path / "dict" / "test").examples) == 1
    shards = tmp_path / "shards"
    write_jsonl(shards / "part-0.jsonl", rows)
    write_jsonl(shards / "part-1.jsonl", [SHAREGPT])
    loaded = load_examples(shards)
    assert len(loaded.examples) == 3 and loaded.locations[-1].endswith("part-1.jsonl:1")
    parquet = tmp_path / "parquet"
    parquet.mkdir()
    for index in range(2):
        pq.write_table(pa.Table.from_pylist([{"prompt": f"q{index}", "completion": "a"}]), parquet / f"{index}.parquet")
    assert load_examples(parquet).format == "prompt_completion" and len(load_examples(parquet).examples) == 2


def test_data_commands_accept_sharegpt_and_folders(tmp_path):
    from tuneloop.cli import app
    from tuneloop.data.audit import AuditOptions, audit_files

    rows = [dict(SHAREGPT, conversations=[{"from": "human", "value": f"Question number {i} about the shop?"},
                                          {"from": "gpt", "value": f"Answer {i}."}]) for i in range(12)]
    folder = tmp_path / "in"
    write_jsonl(folder / "a.jsonl", rows[:6])
    write_jsonl(folder / "b.jsonl", rows[6:])
    runner = CliRunner()
    # The audit reads rows as the other commands do; its slow checks (PII, language) are not what is tested here.
    report = audit_files([str(folder)], AuditOptions(checks=("duplicates", "lengths"), show_progress=False))
    assert report["files"][0]["valid_rows"] == 12 and report["files"][0]["format"] == "chat"
    for args in (["split", str(folder), "--out", str(tmp_path / "split")],
                 ["clean", str(folder), "--out", str(tmp_path / "clean.jsonl"), "--dedup", "exact"],
                 ["augment", str(folder / "a.jsonl"), "--out", str(tmp_path / "aug.jsonl")]):
        result = runner.invoke(app, ["data", *args])
        assert result.exit_code == 0, (args, result.output)
    augmented = [json.loads(line) for line in (tmp_path / "aug.jsonl").read_text().splitlines()]
    copies = [row for row in augmented if row.get("augmented")]
    assert copies and all("conversations" in row for row in augmented)
    assert any(copy["conversations"][0]["value"] != row["conversations"][0]["value"]
               for copy, row in zip(copies, rows, strict=False))
    assert (tmp_path / "split" / "train.jsonl").is_file()
