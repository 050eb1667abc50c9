"""Token-classification data: the CoNLL column reader, jsonl rows with tags, IOB1 -> IOB2, and the data checks on it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneloop.config.load import validate_config
from tuneloop.data.audit import AuditOptions, audit_files
from tuneloop.data.iob import normalize_file_tags, to_iob2
from tuneloop.data.load import read_rows
from tuneloop.data.prepare import load_examples
from tuneloop.data.rows import BadRow, Row
from tuneloop.data.stage import prepare_data
from tuneloop.errors import DataError
from tuneloop.workspace import RunDir, read_json, read_jsonl

SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "datasets"
needs_conll = pytest.mark.skipif(not (SHARED / "conll2003").is_dir(),
                                 reason="../shared/datasets/conll2003 is absent (public NER data for this check)")

GOOD = """-DOCSTART- -X- -X- O

EU NNP B-NP B-ORG
rejects VBZ B-VP O
German JJ B-NP B-MISC
call NN I-NP O

Peter NNP B-NP B-PER
Blackburn NNP I-NP I-PER
"""
IOB1 = """Peter NNP I-PER
Blackburn NNP I-PER
visits VBZ O
Paris NNP I-LOC
Bonn NNP B-LOC

The DT O
EU NNP I-ORG
"""


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _jsonl(path: Path, rows: list[dict]) -> Path:
    return _write(path, "".join(json.dumps(row) + "\n" for row in rows))


def test_conll_sentences_become_rows_with_the_line_of_their_first_word(tmp_path):
    path = _write(tmp_path / "train.conll", GOOD)
    rows = list(read_rows(path))
    assert rows == [
        Row(f"{path}:3", {"tokens": ["EU", "rejects", "German", "call"], "tags": ["B-ORG", "O", "B-MISC", "O"]}),
        Row(f"{path}:8", {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]}),
    ]


@pytest.mark.parametrize("suffix", [".conll", ".iob", ".txt"])
def test_conll_files_are_detected_as_token_classification(tmp_path, suffix):
    loaded = load_examples(_write(tmp_path / f"d{suffix}", GOOD))
    assert loaded.format == "token_classification"
    assert loaded.examples[1] == {"tokens": ["Peter", "Blackburn"], "tags": ["B-PER", "I-PER"]}
    assert loaded.notes == []  # already IOB2


def test_two_column_tab_separated_files_read_the_same(tmp_path):
    path = _write(tmp_path / "d.conll", "Anna\tB-PER\nsings\tO\n")
    assert list(read_rows(path)) == [Row(f"{path}:1", {"tokens": ["Anna", "sings"], "tags": ["B-PER", "O"]})]


def test_a_line_with_another_column_count_names_both_lines(tmp_path):
    path = _write(tmp_path / "d.conll", "EU NNP B-NP B-ORG\nrejects VBZ O\n\nPeter NNP B-NP B-PER\n")
    rows = list(read_rows(path))
    assert isinstance(rows[0], BadRow) and rows[0].where == f"{path}:2"
    assert "3 columns" in rows[0].reason and f"{path}:1" in rows[0].reason and "has 4" in rows[0].reason
    assert rows[1] == Row(f"{path}:4", {"tokens": ["Peter"], "tags": ["B-PER"]})  # the next sentence still reads
    with pytest.raises(DataError) as caught:
        load_examples(path)
    assert f"{path}:2" in str(caught.value) and "data.skip_invalid" in str(caught.value)
    skipped = load_examples(path, skip_invalid=True)
    assert len(skipped.examples) == 1 and len(skipped.bad_rows) == 1


def test_a_single_column_and_a_bad_tag_are_reported_with_their_lines(tmp_path):
    path = _write(tmp_path / "d.conll", "Anna B-PER\nsings\n\nBob E-PER\n\nCarl PERSON\n")
    bad = [row for row in read_rows(path) if isinstance(row, BadRow)]
    assert [row.where for row in bad] == [f"{path}:2", f"{path}:4", f"{path}:6"]
    assert "only one column" in bad[0].reason
    assert "IOBES" in bad[1].reason
    assert "'PERSON' is not an IOB tag" in bad[2].reason


def test_a_txt_file_that_is_not_conll_is_read_as_text_documents(tmp_path):
    path = _write(tmp_path / "notes.txt", "The quick brown fox jumps.\nIt lands.\n\nA second document.\n")
    rows = list(read_rows(path))
    assert [row.fields for row in rows] == [{"text": "The quick brown fox jumps.\nIt lands."},
                                            {"text": "A second document."}]


def test_iob1_files_are_converted_to_iob2_and_the_report_says_so(tmp_path):
    loaded = load_examples(_write(tmp_path / "old.iob", IOB1))
    assert loaded.examples[0]["tags"] == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC"]  # Bonn: a second LOC
    assert loaded.examples[1]["tags"] == ["O", "B-ORG"]
    assert len(loaded.notes) == 1 and "IOB1" in loaded.notes[0] and "3 tag(s)" in loaded.notes[0]


def test_invalid_iob2_sequences_are_repaired_counted_and_located(tmp_path):
    rows = [{"tokens": ["Anna", "met", "Bob", "Smith"], "tags": ["B-PER", "O", "I-PER", "I-PER"]},
            {"tokens": ["in", "Oslo"], "tags": ["O", "B-LOC"]}]
    path = _jsonl(tmp_path / "d.jsonl", rows)
    loaded = load_examples(path)
    assert loaded.examples[0]["tags"] == ["B-PER", "O", "B-PER", "I-PER"]
    assert "1 invalid IOB2 sequence(s)" in loaded.notes[0]
    assert f"{path}:1 word 3 'Bob' (I-PER)" in loaded.notes[0]


def test_to_iob2_starts_an_entity_where_the_type_changes():
    assert to_iob2(["I-PER", "I-LOC", "I-LOC", "O", "B-ORG", "I-ORG"]) == ["B-PER", "B-LOC", "I-LOC", "O", "B-ORG",
                                                                             "I-ORG"]
    examples = [{"tokens": ["a"], "tags": ["B-PER"]}]
    assert normalize_file_tags(examples, ["x:1"], "x") == [] and examples[0]["tags"] == ["B-PER"]


@pytest.mark.parametrize("column", ["tags", "ner_tags", "labels"])
def test_jsonl_rows_take_any_of_the_tag_column_names(tmp_path, column):
    path = _jsonl(tmp_path / "d.jsonl", [{"tokens": ["Oslo", "is", "cold"], column: ["B-LOC", "O", "O"]}])
    loaded = load_examples(path)
    assert loaded.format == "token_classification"
    assert loaded.examples == [{"tokens": ["Oslo", "is", "cold"], "tags": ["B-LOC", "O", "O"]}]


@pytest.mark.parametrize(("row", "expected"), [
    ({"tokens": ["a", "b"], "tags": ["O"]}, "2 tokens but 1 tags"),
    ({"tokens": ["a"], "tags": [3]}, "is a number"),
    ({"tokens": [], "tags": []}, "non-empty list of words"),
    ({"tokens": ["a", " "], "tags": ["O", "O"]}, "tokens[1] must be a non-empty word"),
    ({"tokens": "a b", "tags": ["O", "O"]}, "non-empty list of words"),
])
def test_bad_jsonl_rows_name_file_line_and_problem(tmp_path, row, expected):
    path = _jsonl(tmp_path / "d.jsonl", [{"tokens": ["ok"], "tags": ["O"]}, row])
    with pytest.raises(DataError) as caught:
        load_examples(path, fmt="token_classification")
    assert f"{path}:2: " in str(caught.value) and expected in str(caught.value)


def test_the_data_stage_splits_and_audits_token_rows(tmp_path):
    sentences = [{"tokens": [name, "lives", "in", city, str(i)], "tags": ["B-PER", "O", "O", "B-LOC", "O"]}
                 for i, (name, city) in enumerate([("Anna", "Oslo"), ("Bob", "Rome"), ("Carl", "Lima")] * 10)]
    train = _jsonl(tmp_path / "train.jsonl", sentences)
    test = _write(tmp_path / "test.conll", "Anna B-PER\nlives O\nin O\nOslo B-LOC\n0 O\n\nDora B-PER\nworks O\n"
                                           "at O\nAcme B-ORG\n")
    config = validate_config({"data": {"train_file": str(train), "test_file": str(test)}})
    run = RunDir(tmp_path / "run")
    report = prepare_data(config.data, run, seed=1, console_print=lambda message: None)
    assert report["format"] == "token_classification" and report["examples"]["test"] == 2
    assert read_jsonl(run.split("test"))[1] == {"tokens": ["Dora", "works", "at", "Acme"],
                                               "tags": ["B-PER", "O", "O", "B-ORG"]}
    audit = read_json(run.root / "audit" / "audit.json")
    assert audit["labels"]["distribution"] == {"PER": 30, "LOC": 30}  # entity types, one per entity
    assert any("ORG" in item["message"] and item["check"] == "labels" for item in audit["summary"])
    assert audit["leakage"][str(test)]["exact"]["rows"] == 1  # "Anna lives in Oslo 0" is a training sentence
    held_out = validate_config({"data": {"train_file": str(train), "test_size": 0.2}})
    split = prepare_data(held_out.data, RunDir(tmp_path / "split"), seed=1, console_print=lambda message: None)
    assert split["examples"]["test"] > 0


@needs_conll
def test_the_news_ner_files_read_whole_with_the_published_counts():
    report = audit_files([SHARED / "conll2003" / "train.txt", SHARED / "conll2003" / "test.txt"],
                         AuditOptions(checks=("labels",), show_progress=False))
    assert [f["valid_rows"] for f in report["files"]] == [14041, 3453]
    assert [f["invalid_rows"] for f in report["files"]] == [0, 0]
    assert report["labels"]["distribution"] == {"LOC": 7140, "PER": 6600, "ORG": 6321, "MISC": 3438}
