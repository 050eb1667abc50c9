"""Evaluation end to end on the tiny model: intervals, paired tests, forgetting, report, review, MLflow, compare,
bench and judge commands, and the model card."""

from __future__ import annotations

import json

import pytest
from conftest import write_config
from typer.testing import CliRunner

from tuneloop.cli import app
from tuneloop.evaluate.forgetting import forgetting_report
from tuneloop.workspace import RunDir, read_json

runner = CliRunner()
MC_ROWS = [
    {"question": "Which one is a colour?", "choices": ["blue", "table", "seven"], "answer": 0},
    {"question": "Which one is a number?", "choices": ["chair", "seven", "green"], "answer": 1},
    {"question": "Which one is furniture?", "choices": ["red", "five", "table"], "answer": 2},
]


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory, tiny_model_dir):
    """One LoRA run on the tiny model with a forgetting file and MLflow tracking into its workspace."""
    from conftest import FACTS, chat_row, write_jsonl

    root = tmp_path_factory.mktemp("evaluation")
    mc = write_jsonl(root / "general.jsonl", MC_ROWS)
    train = write_jsonl(root / "train.jsonl", [chat_row(q, a, k) for q, a, k in FACTS] * 4)
    test = write_jsonl(root / "test.jsonl", [chat_row("Tell me: " + q, a, k) for q, a, k in FACTS])
    raw = {
        "output_dir": str(root / "runs" / "first"),
        "model": {"name": str(tiny_model_dir), "dtype": "fp32", "device": "cpu"},
        "data": {"train_file": str(train), "test_file": str(test), "max_length": 64},
        "train": {"preset": "none", "epochs": 2, "learning_rate": 1e-2, "batch_size": 4, "eval_every": 5,
                  "save_every": 5,
                  "lora": {"rank": 8, "alpha": 32, "dropout": 0.0}},
        "evaluate": {"max_new_tokens": 8, "batch_size": 4, "forgetting": [str(mc)], "max_forgetting": 100.0},
        "tracking": {"backend": "mlflow"},
    }
    result = runner.invoke(app, ["run", str(write_config(root / "first.yaml", raw))])
    assert result.exit_code == 0, result.output
    return RunDir(root / "runs" / "first"), raw, root, result.output


def test_metrics_have_intervals_paired_tests_and_forgetting(tracked_run):
    run, _, _, output = tracked_run
    metrics = read_json(run.metrics)
    for key in ("contains_answer", "rouge_l", "token_f1", "bleu", "chrf"):
        low, high = metrics["intervals"]["tuned"][key]
        assert low <= metrics["tuned"][key] <= high
    assert metrics["comparison"]["contains_answer"]["test"] == "mcnemar"
    assert metrics["comparison"]["rouge_l"]["test"] == "paired bootstrap"
    forgetting = next(iter(metrics["forgetting"].values()))
    assert forgetting["n"] == 3
    assert forgetting["change"] == pytest.approx(forgetting["tuned"]["acc"] - forgetting["baseline"]["acc"])
    assert metrics["status"] == "passed" and metrics["failures"] == []
    assert "forgetting: general.jsonl" in output


def test_forgetting_beyond_the_limit_fails():
    tuned = {"forgetting": {"f.jsonl": {"n": 4, "acc": 25.0, "acc_norm": 25.0, "correct": [1, 0, 0, 0]}}}
    baseline = {"forgetting": {"f.jsonl": {"n": 4, "acc": 75.0, "acc_norm": 50.0, "correct": [1, 1, 1, 0]}}}
    found = forgetting_report(tuned, baseline, limit=2.0)["f.jsonl"]
    assert found["change"] == -50.0 and found["exceeded"]
    assert not forgetting_report(tuned, baseline, limit=60.0)["f.jsonl"]["exceeded"]


def test_report_is_self_contained_with_pictures_in_order(tracked_run):
    run, _, _, _ = tracked_run
    html = (run.root / "report.html").read_text()
    order = ["<h1>", "Baseline vs tuned", "Loss curves", "Forgetting check", "Data audit", "Sample outputs",
             "Config and manifest"]
    positions = [html.index(marker) for marker in order]
    assert positions == sorted(positions)
    assert html.count("data:image/png;base64,") >= 2
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert (run.root / "review.html").is_file()


def test_mlflow_holds_params_step_metrics_results_and_the_report(tracked_run):
    import mlflow

    run, _, root, _ = tracked_run
    mlflow.set_tracking_uri(f"sqlite:///{root / 'runs' / 'mlflow.db'}")
    run_id = json.loads((run.root / "tracking.json").read_text())["mlflow"]
    tracked = mlflow.get_run(run_id)
    assert tracked.data.params["train.method"] == "lora"
    assert "tuned/contains_answer" in tracked.data.metrics and "baseline/validation_loss" in tracked.data.metrics
    history = mlflow.MlflowClient().get_metric_history(run_id, "train/loss")
    assert len(history) >= 2
    artifacts = {item.path for item in mlflow.MlflowClient().list_artifacts(run_id)}
    assert {"report.html", "metrics.json"} <= artifacts


def test_rebuilding_the_report_and_comparing_runs(tracked_run, tmp_path):
    run, raw, root, _ = tracked_run
    (run.root / "report.html").unlink()
    assert runner.invoke(app, ["report", str(run.root)]).exit_code == 0
    assert (run.root / "report.html").is_file()
    second = dict(raw, output_dir=str(root / "runs" / "second"), tracking={"backend": "none"},
                  train=dict(raw["train"], learning_rate=5e-3))
    assert runner.invoke(app, ["run", str(write_config(root / "second.yaml", second))]).exit_code == 0
    result = runner.invoke(app, ["compare", str(run.root), str(root / "runs" / "second"), "--out",
                                 str(tmp_path / "cmp.html")])
    assert result.exit_code == 0, result.output
    page = (tmp_path / "cmp.html").read_text()
    assert "first" in page and "second" in page and "data:image/png" in page


def test_bench_command_scores_a_model_on_a_multiple_choice_file(tracked_run, tiny_model_dir, tmp_path):
    _, _, root, _ = tracked_run
    result = runner.invoke(app, ["bench", str(tiny_model_dir), "--file", str(root / "general.jsonl"),
                                 "--json", str(tmp_path / "b.json")])
    assert result.exit_code == 0, result.output
    scored = read_json(tmp_path / "b.json")
    assert scored["n"] == 3 and 0 <= scored["acc"] <= 100 and "acc_norm" in result.output


def test_judge_command_writes_verdicts_and_the_review_sheet_shows_them(tracked_run, tiny_model_dir):
    run, _, _, _ = tracked_run
    result = runner.invoke(app, ["judge", str(run.root), "--judge-model", str(tiny_model_dir), "--limit", "3"])
    assert result.exit_code == 0, result.output
    verdicts = read_json(run.root / "judge.json")
    assert verdicts["n"] == 3 and verdicts["win"] + verdicts["tie"] + verdicts["loss"] + verdicts["invalid"] == 3
    assert "win rate" in result.output


def test_export_carries_a_model_card_with_the_evidence(tracked_run, tmp_path):
    run, _, _, _ = tracked_run
    assert runner.invoke(app, ["export", str(run.root), "--out", str(tmp_path / "card")]).exit_code == 0
    card = (tmp_path / "card" / "README.md").read_text()
    assert "## Held-out results" in card and "95% interval" in card and "Forgetting check" in card
    assert "## Data" in card and "## Limits" in card


def test_a_failed_gate_exits_3_and_keeps_the_run(tracked_run, tmp_path):
    """Two-choice questions keyed to the base model's own picks (so the base scores 100%): wherever tuning changed
    a pick the tuned model loses points, evaluate.max_forgetting=0 fails the run and `tuneloop evaluate` exits
    with the gate's code, keeping the tuned weights and the metrics."""
    import shutil

    import yaml
    from conftest import FACTS, write_jsonl

    from tuneloop.errors import GATE_FAILED_EXIT_CODE

    run, _, _, _ = tracked_run
    copy = tmp_path / "gated"
    shutil.copytree(run.root, copy)
    questions = [{"question": question, "choices": [reply, FACTS[(i + 1) % len(FACTS)][1]], "answer": 0}
                 for i, (question, reply, _) in enumerate(FACTS)]
    picks = tmp_path / "picks.jsonl"

    def evaluate_on(rows, limit):
        write_jsonl(picks, rows)
        config = yaml.safe_load((copy / "config.yaml").read_text())
        config["output_dir"] = str(copy)
        config["evaluate"].update(forgetting=[str(picks)], max_forgetting=limit)
        (copy / "config.yaml").write_text(yaml.safe_dump(config))
        return runner.invoke(app, ["evaluate", str(copy)]), read_json(RunDir(copy).metrics)

    result, metrics = evaluate_on(questions, None)
    assert result.exit_code == 0, result.output
    found = next(iter(metrics["forgetting"].values()))
    base_correct, tuned_correct = found["baseline"]["correct"], found["tuned"]["correct"]
    assert base_correct != tuned_correct  # tuning changed at least one pick; otherwise nothing can be lost
    # Re-key each question to the base's pick: where the tuned model picked otherwise, it is now wrong.
    rekeyed = [row if base_right else {**row, "answer": 1 - row["answer"]}
               for row, base_right in zip(questions, base_correct, strict=True)]
    result, metrics = evaluate_on(rekeyed, 0.0)
    found = next(iter(metrics["forgetting"].values()))
    assert found["baseline"]["acc"] == 100.0 and found["tuned"]["acc"] < 100.0, found
    assert metrics["status"] == "failed"
    assert result.exit_code == GATE_FAILED_EXIT_CODE, result.output
    assert "FAILED forgetting: picks.jsonl lost" in result.output
    assert "run marked failed by 1 gate(s)" in result.output
    assert RunDir(copy).trained_weights().exists()
