"""The data audit on rows built here, and on the shared Banking77 and SST-2 files when they are present."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuneloop.data.audit import AuditOptions, audit_files
from tuneloop.data.audit_html import render_audit_html

SHARED = Path(__file__).resolve().parents[3] / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared datasets not found at {SHARED}")
QUICK = AuditOptions(show_progress=False)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def qa(question: str, answer: str) -> dict:
    return {"prompt": question, "completion": answer}


QUESTIONS = [f"What is the opening time of store number {n} in the old town district?" for n in range(30)]


@pytest.fixture()
def files(tmp_path):
    train_rows = [qa(q, f"It opens at {n}:00.") for n, q in enumerate(QUESTIONS)]
    train_rows += [qa(QUESTIONS[0].upper(), "Same question, shouted."), qa("Write to jane.doe@example.com now", "ok")]
    train_rows.append({"prompt": "   ", "completion": "empty prompt"})
    test_rows = [qa(QUESTIONS[3], "leaked exactly"), qa(QUESTIONS[4].replace("town", "towns"), "leaked nearly"),
                 qa("A question about bicycles that nobody asked in training.", "fresh")]
    return write_jsonl(tmp_path / "train.jsonl", train_rows), write_jsonl(tmp_path / "test.jsonl", test_rows)


def test_audit_reports_invalid_duplicates_leakage_and_pii(files):
    report = audit_files(list(files), QUICK)
    train = report["files"][0]
    assert train["invalid_rows"] == 1 and "train.jsonl:33" in train["invalid_examples"][0]
    assert train["empty_fields"] == {"prompt": 1}
    assert report["duplicates"]["exact"]["duplicate_rows"] == 0  # the shouted copy has a different answer
    leak = report["leakage"][str(files[1])]
    assert leak["exact"]["rows"] == 1 and leak["exact"]["examples"][0]["train"]["where"].endswith(":4")
    assert leak["near"]["rows"] >= 1
    assert report["pii"]["by_kind"].get("email") == 1
    assert "jane.doe@example.com" not in json.dumps(report["pii"])
    severities = [item["severity"] for item in report["summary"]]
    assert severities == sorted(severities, key=["error", "warning", "info"].index)


def test_labels_imbalance_and_unseen_labels(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", [{"text": f"row {i} about things", "label": "a" if i < 40 else "b"}
                                                   for i in range(42)])
    test = write_jsonl(tmp_path / "test.jsonl", [{"text": "row about c", "label": "c"}])
    report = audit_files([train, test], QUICK)
    assert report["labels"]["imbalance_ratio"] == 20.0
    assert report["labels"]["per_split"][str(test)] == {"c": 1}
    messages = " ".join(item["message"] for item in report["summary"])
    assert "imbalanced 20:1" in messages and "never seen in training: ['c']" in messages


def test_rows_in_another_language_are_flagged(tmp_path):
    rows = [qa(q, "An answer in plain English for this question.") for q in QUESTIONS[:10]]
    rows.append(qa("Pourriez-vous me dire à quelle heure ouvre le magasin demain matin ?", "Oui."))
    report = audit_files([write_jsonl(tmp_path / "mixed.jsonl", rows)], QUICK)
    assert report["language"]["unexpected_rows"] == 1
    assert report["language"]["unexpected_examples"][0]["language"] == "fr"


def test_preference_pairs_with_identical_replies_are_flagged(tmp_path):
    rows = [{"prompt": "p", "chosen": "Same answer.", "rejected": "same  answer."},
            {"prompt": "p", "chosen": "A careful and kind reply.", "rejected": "Go away."}]
    report = audit_files([write_jsonl(tmp_path / "pref.jsonl", rows)], QUICK)
    assert report["preference"]["identical_pairs"] == 1 and report["preference"]["pairs"] == 2


def test_token_lengths_and_truncation_with_a_tokenizer(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    rows = [qa("short", "yes"), qa("long " * 200, "no")]
    options = AuditOptions(tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir), tokenizer_name="tiny",
                           max_length=64, show_progress=False)
    report = audit_files([write_jsonl(tmp_path / "t.jsonl", rows)], options)
    assert report["lengths"]["truncated_rows"] == 1 and report["lengths"]["unit"].startswith("tokens")
    assert report["lengths"]["max"] > 200


def test_html_report_is_one_self_contained_page(files):
    html = render_audit_html(audit_files(list(files), QUICK))
    assert html.startswith("<!doctype html>") and "<svg" in html
    assert "http://" not in html and "https://" not in html and "<script" not in html
    assert html.index("Summary") < html.index("Lengths") < html.index("Leakage")


@needs_shared
def test_banking77_leakage_and_duplicates_match_the_known_counts():
    banking = SHARED / "banking77"
    report = audit_files([banking / "train.csv", banking / "test.csv"],
                         AuditOptions(checks=("duplicates", "leakage", "labels"), show_progress=False))
    assert report["duplicates"]["exact"]["duplicate_rows"] == 4
    leak = report["leakage"][str(banking / "test.csv")]
    assert leak["exact"]["rows"] == 7
    assert leak["near"]["rows"] > 0 and report["duplicates"]["near"]["pairs"] > 0  # beyond the exact copies
    assert report["labels"]["classes"] == 77


@needs_shared
def test_sst2_duplicate_phrases_are_reported():
    report = audit_files([SHARED / "sst2" / "train.tsv"], AuditOptions(checks=("duplicates",), show_progress=False))
    assert report["files"][0]["valid_rows"] == 67349
    assert report["duplicates"]["exact"]["duplicate_rows"] == 67349 - 66978
