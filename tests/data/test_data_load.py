"""Reading rows from jsonl, json, csv, tsv and parquet files, each tagged with its file:line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneloop.data.load import read_rows
from tuneloop.data.rows import BadRow, Row
from tuneloop.errors import DataError


def _write(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def _wheres(items: list) -> list[str]:
    return [item.where for item in items]


def test_jsonl_rows_keep_their_fields_and_line_numbers(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"text": "one"}\n{"text": "two", "n": 2}\n')
    items = list(read_rows(path))
    assert items == [Row(f"{path}:1", {"text": "one"}), Row(f"{path}:2", {"text": "two", "n": 2})]


def test_ndjson_suffix_reads_as_jsonl(tmp_path):
    path = _write(tmp_path / "d.NDJSON", '{"text": "one"}\n')
    assert list(read_rows(path)) == [Row(f"{path}:1", {"text": "one"})]


def test_jsonl_blank_lines_are_skipped_but_still_counted(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"text": "one"}\n\n   \n{"text": "four"}\n')
    items = list(read_rows(path))
    assert _wheres(items) == [f"{path}:1", f"{path}:4"]
    assert all(isinstance(item, Row) for item in items)


def test_jsonl_broken_line_becomes_bad_row_with_its_line_number(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"text": "one"}\n\n{"text": broken\n{"text": "four"}\n')
    items = list(read_rows(path))
    bad = items[1]
    assert isinstance(bad, BadRow)
    assert bad.where == f"{path}:3"
    assert "not valid JSON" in bad.reason
    assert str(bad).startswith(f"{path}:3: ")
    assert items[2] == Row(f"{path}:4", {"text": "four"})


def test_jsonl_row_that_is_a_list_becomes_bad_row(tmp_path):
    path = _write(tmp_path / "d.jsonl", '[1, 2]\n"just text"\n')
    items = list(read_rows(path))
    assert all(isinstance(item, BadRow) for item in items)
    assert _wheres(items) == [f"{path}:1", f"{path}:2"]
    assert "got list" in items[0].reason
    assert "got str" in items[1].reason


def test_jsonl_accepts_crlf_line_endings(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"text": "one"}\r\n{"text": "two"}\r\n')
    assert [item.fields["text"] for item in read_rows(path)] == ["one", "two"]


def test_json_array_items_are_tagged_with_the_line_each_starts_on(tmp_path):
    text = '[\n  {\n    "text": "one"\n  },\n  {"text": "two"},\n\n  {\n    "text": "three"\n  }\n]\n'
    path = _write(tmp_path / "d.json", text)
    items = list(read_rows(path))
    assert [item.fields["text"] for item in items] == ["one", "two", "three"]
    assert _wheres(items) == [f"{path}:2", f"{path}:5", f"{path}:7"]


def test_json_data_wrapper_is_unwrapped_with_correct_lines(tmp_path):
    path = _write(tmp_path / "d.json", '{"data": [\n  {"text": "one"},\n  {"text": "two"}\n]}\n')
    items = list(read_rows(path))
    assert items == [Row(f"{path}:2", {"text": "one"}), Row(f"{path}:3", {"text": "two"})]


def test_json_compact_array_names_the_item_on_the_shared_line(tmp_path):
    path = _write(tmp_path / "d.json", json.dumps([{"text": "a"}, {"text": "b"}]))
    assert _wheres(list(read_rows(path))) == [f"{path}:1 (item 1)", f"{path}:1 (item 2)"]


def test_json_array_item_that_is_not_an_object_becomes_bad_row(tmp_path):
    path = _write(tmp_path / "d.json", '[\n  {"text": "one"},\n  [1, 2]\n]\n')
    items = list(read_rows(path))
    assert isinstance(items[0], Row)
    assert isinstance(items[1], BadRow)
    assert items[1].where == f"{path}:3"
    assert "got list" in items[1].reason


def test_json_invalid_document_raises_with_the_error_line(tmp_path):
    path = _write(tmp_path / "d.json", '[\n  {"text": "one"},\n  {"text": }\n]\n')
    with pytest.raises(DataError, match="not valid JSON") as caught:
        list(read_rows(path))
    assert f"{path}:3" in str(caught.value)
    assert ".jsonl" in str(caught.value)


def test_json_top_level_scalar_is_rejected(tmp_path):
    path = _write(tmp_path / "d.json", "42\n")
    with pytest.raises(DataError, match="expected a JSON array") as caught:
        list(read_rows(path))
    assert str(path) in str(caught.value)


def test_csv_rows_map_header_to_values_and_count_the_header_as_line_one(tmp_path):
    path = _write(tmp_path / "d.csv", "prompt , completion\nhi,there\n\"a, b\",c\n")
    items = list(read_rows(path))
    assert items == [
        Row(f"{path}:2", {"prompt": "hi", "completion": "there"}),
        Row(f"{path}:3", {"prompt": "a, b", "completion": "c"}),
    ]


def test_csv_blank_lines_are_skipped_but_still_counted(tmp_path):
    path = _write(tmp_path / "d.csv", "text\none\n\ntwo\n")
    assert _wheres(list(read_rows(path))) == [f"{path}:2", f"{path}:4"]


def test_csv_ragged_row_becomes_bad_row_naming_field_counts(tmp_path):
    path = _write(tmp_path / "d.csv", "prompt,completion\nhi,there\na,b,c\nok,fine\n")
    items = list(read_rows(path))
    bad = items[1]
    assert isinstance(bad, BadRow)
    assert bad.where == f"{path}:3"
    assert "3 fields" in bad.reason
    assert "header has 2" in bad.reason
    assert "prompt, completion" in bad.reason
    assert items[2] == Row(f"{path}:4", {"prompt": "ok", "completion": "fine"})


def test_csv_with_no_header_is_rejected(tmp_path):
    path = _write(tmp_path / "d.csv", "")
    with pytest.raises(DataError, match="empty file") as caught:
        list(read_rows(path))
    assert str(path) in str(caught.value)


def test_tsv_splits_on_tabs_only(tmp_path):
    path = _write(tmp_path / "d.tsv", "prompt\tcompletion\nhello, world\tbye\n")
    assert list(read_rows(path)) == [Row(f"{path}:2", {"prompt": "hello, world", "completion": "bye"})]


def test_parquet_rows_keep_typed_fields_and_row_numbers(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"text": "one", "n": 1}, {"text": "two", "n": 2}]), path)
    items = list(read_rows(path))
    assert items == [
        Row(f"{path}:row 1", {"text": "one", "n": 1}),
        Row(f"{path}:row 2", {"text": "two", "n": 2}),
    ]


def test_corrupt_parquet_raises_data_error(tmp_path):
    path = _write(tmp_path / "d.parquet", "not parquet at all")
    with pytest.raises(DataError, match="not a readable parquet file") as caught:
        list(read_rows(path))
    assert str(path) in str(caught.value)


def test_missing_file_raises_naming_the_path(tmp_path):
    path = tmp_path / "nowhere.jsonl"
    with pytest.raises(DataError, match="no such file") as caught:
        list(read_rows(path))
    assert str(path) in str(caught.value)


def test_empty_directory_raises_naming_the_path(tmp_path):
    path = tmp_path / "folder.jsonl"
    path.mkdir()
    with pytest.raises(DataError, match="neither a saved Hugging Face dataset") as caught:
        list(read_rows(path))
    assert str(path) in str(caught.value)


def test_unknown_suffix_raises_naming_path_and_suffix(tmp_path):
    path = _write(tmp_path / "d.xml", "<hello/>\n")
    with pytest.raises(DataError, match="unknown file type") as caught:
        list(read_rows(path))
    assert str(path) in str(caught.value)
    assert "'.xml'" in str(caught.value)


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv", ".tsv", ".txt"])
def test_binary_file_is_rejected(tmp_path, suffix):
    path = tmp_path / f"d{suffix}"
    path.write_bytes(b'{"text": "a"}\x00\x01\x02\n')
    with pytest.raises(DataError, match="binary") as caught:
        list(read_rows(path))
    assert str(path) in str(caught.value)


def test_latin1_jsonl_raises_naming_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes('{"text": "ok"}\n{"text": "café"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8") as caught:
        list(read_rows(path))
    assert f"{path}:2:" in str(caught.value)


def test_latin1_json_raises_naming_the_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes('[\n  {"text": "ok"},\n  {"text": "café"}\n]\n'.encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8") as caught:
        list(read_rows(path))
    assert f"{path}:3:" in str(caught.value)


def test_latin1_json_with_bom_raises_naming_the_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b'\xef\xbb\xbf[\n{"text": "ok"},\n"\xe9"\n]\n')
    with pytest.raises(DataError, match="not valid UTF-8") as caught:
        list(read_rows(path))
    assert f"{path}:3:" in str(caught.value)


def test_latin1_csv_raises_naming_the_file(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("text\nok\ncafé\n".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8") as caught:
        list(read_rows(path))
    assert str(path) in str(caught.value)


def test_latin1_csv_raises_naming_the_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes("text\nok\ncafé\n".encode("latin-1"))
    with pytest.raises(DataError, match="not valid UTF-8") as caught:
        list(read_rows(path))
    assert f"{path}:3:" in str(caught.value)


def test_utf8_bom_is_accepted_in_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"text": "one"}\n{"text": "two"}\n')
    assert list(read_rows(path)) == [Row(f"{path}:1", {"text": "one"}), Row(f"{path}:2", {"text": "two"})]


def test_utf8_bom_is_accepted_in_json(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(b'\xef\xbb\xbf[\n  {"text": "one"}\n]\n')
    assert list(read_rows(path)) == [Row(f"{path}:2", {"text": "one"})]


def test_utf8_bom_is_not_part_of_the_first_csv_column_name(tmp_path):
    path = tmp_path / "d.csv"
    path.write_bytes(b"\xef\xbb\xbfprompt,completion\nhi,there\n")
    assert list(read_rows(path)) == [Row(f"{path}:2", {"prompt": "hi", "completion": "there"})]


def test_non_ascii_utf8_text_is_read_intact(tmp_path):
    path = _write(tmp_path / "d.jsonl", '{"text": "café – 東京"}\n')
    assert next(read_rows(path)).fields["text"] == "café – 東京"


def test_txt_documents_are_separated_by_blank_lines_and_tagged_with_their_first_line(tmp_path):
    path = _write(tmp_path / "notes.txt", "First document,\nsecond line.\n\n  \n\nSecond document.\r\n\nThird\n")
    items = list(read_rows(path))
    assert items == [
        Row(f"{path}:1", {"text": "First document,\nsecond line."}),
        Row(f"{path}:6", {"text": "Second document."}),
        Row(f"{path}:8", {"text": "Third"}),
    ]


def test_txt_with_undecodable_bytes_names_the_line(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"fine\n\nstill fine\n" + "caf\u00e9\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"notes.txt:4: not valid UTF-8") as caught:
        list(read_rows(path))
    assert "iconv" in str(caught.value)


def test_gzipped_txt_reads_like_plain_txt(tmp_path):
    import gzip

    path = tmp_path / "notes.txt.gz"
    path.write_bytes(gzip.compress(b"one\n\ntwo\n"))
    assert [item.fields["text"] for item in read_rows(path)] == ["one", "two"]


def test_txt_file_with_a_non_text_format_is_a_clear_error(tmp_path):
    from tuneloop.data.prepare import load_examples

    path = _write(tmp_path / "notes.txt", "one\n\ntwo\n")
    assert load_examples(path).format == "text"
    with pytest.raises(DataError, match="a .txt file holds plain-text documents.*data.format is chat"):
        load_examples(path, "chat")
