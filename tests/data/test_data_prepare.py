"""The data stage: loading with malformed-row handling, the seeded validation split and the written splits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneloop.config.schema import DataConfig
from tuneloop.data.prepare import load_examples, split_validation
from tuneloop.data.stage import prepare_data
from tuneloop.errors import DataError
from tuneloop.workspace import RunDir


def _pc(i: int) -> dict:
    return {"prompt": f"question {i}", "completion": f"answer {i}"}


def _canonical(i: int) -> dict:
    return {"messages": [
        {"role": "user", "content": f"question {i}"},
        {"role": "assistant", "content": f"answer {i}"},
    ]}


def _write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _write_rows(path: Path, rows: list[dict]) -> Path:
    return _write_lines(path, [json.dumps(row) for row in rows])


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture()
def mixed_file(tmp_path) -> Path:
    """Three good rows, a broken JSON line (line 2) and a row with an empty completion (line 4)."""
    return _write_lines(tmp_path / "mixed.jsonl", [
        json.dumps(_pc(1)),
        '{"prompt": "broken',
        json.dumps(_pc(2)),
        json.dumps({"prompt": "q", "completion": ""}),
        json.dumps(_pc(3)),
    ])


def test_load_examples_detects_the_format_and_converts_every_row(tmp_path):
    path = _write_rows(tmp_path / "d.jsonl", [_pc(1), _pc(2)])
    loaded = load_examples(path)
    assert loaded.format == "prompt_completion"
    assert loaded.examples == [_canonical(1), _canonical(2)]
    assert loaded.bad_rows == []
    assert loaded.path == str(path)


def test_load_examples_stops_on_malformed_rows_listing_each_and_the_hint(mixed_file):
    with pytest.raises(DataError) as caught:
        load_examples(mixed_file)
    message = str(caught.value)
    assert "2 malformed row(s)" in message
    assert f"{mixed_file}:2: not valid JSON" in message
    assert f"{mixed_file}:4: field 'completion' is empty" in message
    assert "data.skip_invalid" in message


def test_load_examples_skip_invalid_returns_good_examples_and_counts_bad_rows(mixed_file):
    loaded = load_examples(mixed_file, skip_invalid=True)
    assert loaded.examples == [_canonical(1), _canonical(2), _canonical(3)]
    assert len(loaded.bad_rows) == 2
    assert sorted(bad.where for bad in loaded.bad_rows) == [f"{mixed_file}:2", f"{mixed_file}:4"]


def test_load_examples_shows_at_most_ten_problems_and_counts_the_rest(tmp_path):
    path = _write_lines(tmp_path / "d.jsonl", [json.dumps(_pc(0))] + ["not json"] * 13)
    with pytest.raises(DataError) as caught:
        load_examples(path)
    message = str(caught.value)
    assert "13 malformed row(s)" in message
    assert message.count("not valid JSON") == 10
    assert "... and 3 more" in message
    assert f"{path}:11:" in message
    assert f"{path}:12:" not in message


def test_load_examples_explicit_format_that_does_not_fit_fails_every_row(tmp_path):
    path = _write_rows(tmp_path / "d.jsonl", [{"instruction": "i", "output": "o"}])
    with pytest.raises(DataError, match=r"missing field\(s\) \['prompt', 'completion'\]"):
        load_examples(path, fmt="prompt_completion")


def test_load_examples_with_only_bad_rows_has_no_usable_examples_even_when_skipping(tmp_path):
    path = _write_lines(tmp_path / "d.jsonl", ["nope", "[1]"])
    with pytest.raises(DataError, match="no usable examples"):
        load_examples(path, skip_invalid=True)


def test_split_validation_is_deterministic_for_a_seed():
    examples = [_canonical(i) for i in range(20)]
    assert split_validation(examples, 0.25, seed=7) == split_validation(examples, 0.25, seed=7)


def test_split_validation_differs_for_another_seed():
    examples = [_canonical(i) for i in range(20)]
    assert split_validation(examples, 0.25, seed=7)[1] != split_validation(examples, 0.25, seed=8)[1]


def test_split_validation_keeps_every_example_exactly_once_in_original_order():
    examples = [_canonical(i) for i in range(20)]
    train, validation = split_validation(examples, 0.25, seed=3)
    assert len(validation) == 5
    assert len(train) == 15
    assert sorted(train + validation, key=examples.index) == examples
    assert train == sorted(train, key=examples.index)
    assert validation == sorted(validation, key=examples.index)


@pytest.mark.parametrize(("count", "share"), [(2, 0.1), (2, 0.9), (3, 0.01), (3, 0.99)])
def test_split_validation_puts_at_least_one_example_on_each_side(count, share):
    train, validation = split_validation([_canonical(i) for i in range(count)], share, seed=0)
    assert len(train) >= 1
    assert len(validation) >= 1
    assert len(train) + len(validation) == count


@pytest.mark.parametrize("count", [0, 1])
def test_split_validation_needs_at_least_two_examples(count):
    with pytest.raises(DataError, match=f"only {count} training example"):
        split_validation([_canonical(i) for i in range(count)], 0.1, seed=0)


def test_prepare_data_writes_the_splits_and_the_report(tmp_path):
    train_file = _write_lines(tmp_path / "train.jsonl", [json.dumps(_pc(i)) for i in range(10)] + ["{oops"])
    test_rows = [{**_pc(i), "answer": f"answer {i}"} for i in (100, 101, 102)]
    test_file = _write_rows(tmp_path / "test.jsonl", test_rows)
    config = DataConfig(train_file=str(train_file), test_file=str(test_file), skip_invalid=True)
    run = RunDir(tmp_path / "run")
    messages: list[str] = []

    report = prepare_data(config, run, seed=0, console_print=messages.append)

    train = _read_jsonl(run.data / "train.jsonl")
    validation = _read_jsonl(run.data / "validation.jsonl")
    test = _read_jsonl(run.data / "test.jsonl")
    assert (len(train), len(validation), len(test)) == (9, 1, 3)
    assert sorted(train + validation, key=str) == sorted((_canonical(i) for i in range(10)), key=str)
    assert test[0] == {**_canonical(100), "answer": "answer 100"}

    assert report["format"] == "prompt_completion"
    assert report["examples"] == {"train": 9, "validation": 1, "test": 3}
    assert report["files"]["train"]["skipped_rows"] == 1
    [skipped] = report["files"]["train"]["skipped_examples"]
    assert skipped.startswith(f"{train_file}:11: not valid JSON")
    assert report["files"]["test"]["skipped_rows"] == 0
    assert report["validation_split"] == "10% of train, seed 0"
    assert json.loads((run.data / "data_report.json").read_text(encoding="utf-8")) == report

    assert any("skipped 1 malformed row(s)" in message for message in messages)
    assert any(message.strip().startswith(f"skipped {train_file}:11") for message in messages)


def test_prepare_data_same_seed_gives_the_same_split(tmp_path):
    train_file = _write_rows(tmp_path / "train.jsonl", [_pc(i) for i in range(12)])
    config = DataConfig(train_file=str(train_file), validation_size=0.25)
    first, second = RunDir(tmp_path / "a"), RunDir(tmp_path / "b")
    prepare_data(config, first, seed=5, console_print=lambda *_: None)
    prepare_data(config, second, seed=5, console_print=lambda *_: None)
    assert (first.data / "validation.jsonl").read_text() == (second.data / "validation.jsonl").read_text()
    assert len(_read_jsonl(first.data / "validation.jsonl")) == 3


def test_prepare_data_without_test_file_writes_no_test_split(tmp_path):
    train_file = _write_rows(tmp_path / "train.jsonl", [_pc(i) for i in range(4)])
    run = RunDir(tmp_path / "run")
    messages: list[str] = []
    report = prepare_data(DataConfig(train_file=str(train_file)), run, seed=0, console_print=messages.append)
    assert report["examples"] == {"train": 3, "validation": 1}
    assert not (run.data / "test.jsonl").exists()
    assert not any("skipped" in message for message in messages)


def test_prepare_data_uses_the_validation_file_instead_of_splitting(tmp_path):
    train_file = _write_rows(tmp_path / "train.jsonl", [_pc(i) for i in range(3)])
    validation_file = _write_rows(tmp_path / "val.jsonl", [_pc(50), _pc(51)])
    config = DataConfig(train_file=str(train_file), validation_file=str(validation_file))
    run = RunDir(tmp_path / "run")
    report = prepare_data(config, run, seed=0, console_print=lambda *_: None)
    assert report["validation_split"] == "file"
    assert report["examples"] == {"train": 3, "validation": 2}
    assert _read_jsonl(run.data / "validation.jsonl") == [_canonical(50), _canonical(51)]


def test_prepare_data_samples_the_validation_file_with_the_seed(tmp_path):
    train_file = _write_rows(tmp_path / "train.jsonl", [_pc(i) for i in range(3)])
    validation_file = _write_rows(tmp_path / "val.jsonl", [_pc(i) for i in range(50, 70)])
    config = DataConfig(train_file=str(train_file), validation_file=str(validation_file), max_validation_examples=5)
    drawn = []
    for name in ("first", "second"):
        run = RunDir(tmp_path / name)
        report = prepare_data(config, run, seed=3, console_print=lambda *_: None)
        drawn.append(_read_jsonl(run.data / "validation.jsonl"))
    assert report["examples"] == {"train": 3, "validation": 5}
    assert report["validation_subsample"] == "5 examples drawn with seed 3"
    assert drawn[0] == drawn[1] and all(example in [_canonical(i) for i in range(50, 70)] for example in drawn[0])


def test_prepare_data_stops_on_malformed_rows_without_writing_splits(tmp_path):
    train_file = _write_lines(tmp_path / "train.jsonl", [json.dumps(_pc(1)), json.dumps(_pc(2)), "{oops"])
    run = RunDir(tmp_path / "run")
    with pytest.raises(DataError, match="data.skip_invalid"):
        prepare_data(DataConfig(train_file=str(train_file)), run, seed=0, console_print=lambda *_: None)
    assert not (run.data / "train.jsonl").exists()
