"""The runs table's row and the curves, read from a run directory's files (no server, no browser)."""

from __future__ import annotations

import json

import yaml

from tuneloop.ui.runs import find_runs, read_curves, summarize


def make_run(root, name, metrics=None, log=None, summary=None):
    run = root / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"name": "smollm2-135m-instruct"},
                                                     "train": {"method": "lora", "recipe": "auto"}}))
    if metrics is not None:
        (run / "metrics.json").write_text(json.dumps(metrics))
    if summary is not None:
        (run / "train_summary.json").write_text(json.dumps(summary))
    if log is not None:
        (run / "train_log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log) + '{"step": 9, "lo')
    return run


def test_row_leads_with_the_right_or_wrong_metric_and_says_whether_it_forgot(tmp_path):
    metrics = {"baseline": {"exact_match": 10.0, "validation_loss": 2.0},
               "tuned": {"exact_match": 60.0, "validation_loss": 0.5},
               "intervals": {"tuned": {"exact_match": [50.0, 70.0]}},
               "forgetting": {"general.jsonl": {"change": -4.5, "baseline": {"acc": 50}, "tuned": {"acc": 45.5}}},
               "status": "failed", "failures": ["forgetting: general.jsonl lost 4.5 points (max 2)"]}
    forgot = summarize(tmp_path, make_run(tmp_path, "forgot", metrics, summary={"seconds": 75}))
    assert (forgot.metric, forgot.baseline, forgot.tuned, forgot.interval) == ("exact_match", 10.0, 60.0,
                                                                               [50.0, 70.0])
    assert forgot.status == "failed checks" and forgot.forgetting == "FORGOT (-4.5 points)"
    assert forgot.seconds == 75 and forgot.recipe == "lora" and forgot.model == "smollm2-135m-instruct"

    kept = summarize(tmp_path, make_run(tmp_path, "kept", {**metrics, "status": "passed", "failures": []}))
    assert kept.status == "finished" and kept.forgetting == "kept (-4.5 points)"
    unchecked = summarize(tmp_path, make_run(tmp_path, "plain", {"tuned": {"validation_loss": 0.4}}))
    assert unchecked.metric == "validation_loss" and unchecked.forgetting == "not checked"
    assert summarize(tmp_path, make_run(tmp_path, "empty")).status == "incomplete"
    assert {p.name for p in find_runs(tmp_path)} == {"forgot", "kept", "plain", "empty"}


def test_curves_come_from_the_log_and_a_resume_replaces_repeated_steps(tmp_path):
    log = [{"step": 2, "loss": 3.0, "train_tokens_per_second": 100.0}, {"step": 4, "loss": 2.5},
           {"step": 4, "eval_loss": 2.7}, {"step": 4, "loss": 2.4, "train_tokens_per_second": 120.0},  # resumed
           {"step": 6, "loss": 2.0}]
    curves = read_curves(make_run(tmp_path, "run", log=log))  # the last line is being written: skipped
    assert curves["train"] == [(2, 3.0), (4, 2.4), (6, 2.0)]
    assert curves["validation"] == [(4, 2.7)]
    assert curves["tokens_per_second"] == 120.0 and curves["step"] == 6
