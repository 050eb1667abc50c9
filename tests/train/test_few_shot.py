"""The few-shot preset: when it triggers, explicit values win, stratified folds, k trainings, final on all rows."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
from conftest import write_config, write_jsonl
from typer.testing import CliRunner

from tuneloop.cli import app
from tuneloop.config.load import validate_config
from tuneloop.config.schema import TrainConfig
from tuneloop.errors import TuneloopError
from tuneloop.report.html import render_report
from tuneloop.train import few_shot
from tuneloop.train.few_shot import fold_count, fold_splits, preset_applies, preset_settings, summarize_folds
from tuneloop.workspace import RunDir, read_json, read_jsonl

WORDS = {"pos": ("good", "great", "lovely"), "neg": ("bad", "awful", "poor")}


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    if isinstance(result.exception, TuneloopError):
        raise result.exception
    return result


def twenty_rows() -> list[dict]:
    return [{"text": f"the day was {WORDS[label][i % 3]} {i}", "label": label}
            for i in range(20) for label in ["pos" if i % 2 else "neg"]]


def test_preset_triggers_under_a_hundred_rows_or_when_asked():
    assert preset_applies("auto", 99) and not preset_applies("auto", 100)
    assert preset_applies("few_shot", 5000) and not preset_applies("none", 10)


def test_explicit_user_values_win_over_the_preset():
    user = validate_config({"data": {"train_file": "x.jsonl"},
                            "train": {"learning_rate": 1e-3, "early_stopping_patience": None}}).train
    settings, explicit = preset_settings(user)
    assert explicit == ["early_stopping_patience", "learning_rate"]
    assert "learning_rate" not in settings and "early_stopping_patience" not in settings
    assert settings["epochs"] > TrainConfig().epochs and settings["weight_decay"] > 0
    assert preset_settings(TrainConfig())[0]["learning_rate"] < TrainConfig().learning_rate


def test_folds_are_stratified_and_cover_every_row_once():
    rows = twenty_rows() + [{"text": "a lone neutral day", "label": "neutral"}]
    splits = fold_splits(rows, 4, seed=1)
    assert len(splits) == 4
    heldout = [row["text"] for _, held in splits for row in held]
    assert sorted(heldout) == sorted(row["text"] for row in rows[:20])  # each row held out once; the single
    for train, held in splits:                                          # 'neutral' row always trains
        assert len(train) + len(held) == len(rows) and {"neutral"} <= {row["label"] for row in train}
        assert {row["label"] for row in held} <= {row["label"] for row in train}
        assert max(Counter(row["label"] for row in held).values()) - min(
            Counter(row["label"] for row in held).values()) <= 1
    assert fold_count(18) == 4 and fold_count(40) == 5 and fold_count(7) == 1


def test_the_epoch_count_minimizes_the_mean_loss_over_epochs_every_fold_reached():
    found = summarize_folds([
        {"validation_loss_by_epoch": [1.0, 0.5, 0.6, 0.9]},
        {"validation_loss_by_epoch": [1.2, 0.7, 0.8]},  # stopped early: epoch 4 is not compared
    ])
    assert found["chosen_epochs"] == 2 and found["cv_validation_loss"]["mean"] == pytest.approx(0.6)
    assert found["cv_validation_loss"]["std"] == pytest.approx(0.1)


def _few_shot_config(root: Path, model_dir: Path, rows: list[dict], **train) -> dict:
    return {
        "output_dir": str(root / "run"),
        "model": {"name": str(model_dir), "dtype": "fp32", "device": "cpu"},
        "data": {"train_file": str(write_jsonl(root / "train.jsonl", rows)), "max_length": 64},
        "train": {"batch_size": 4, "logging_steps": 1, "lora": {"rank": 4, "alpha": 8, "dropout": 0.0}, **train},
        "tracking": {"backend": "none"},
    }


def test_classification_cross_validates_then_trains_the_final_model_on_all_rows(tmp_path, tiny_model_dir,
                                                                                monkeypatch):
    monkeypatch.setattr(few_shot, "SEARCH_EPOCHS", 4.0)  # the same machinery as 20 epochs, in a few seconds
    raw = _few_shot_config(tmp_path, tiny_model_dir, twenty_rows(), method="full", learning_rate=1e-3)
    result = invoke("train", str(write_config(tmp_path / "run.yaml", raw)))
    assert result.exit_code == 0, result.output
    run = RunDir(tmp_path / "run")
    train_rows = read_jsonl(run.split("train"))
    assert len(train_rows) == 18  # 20 rows, 2 split off for validation: under 100, so the preset ran
    assert "few-shot preset (18 training rows < 100" in result.output
    assert "train.epochs 3.0 -> 4.0" in result.output and "kept your explicit train.learning_rate" in result.output
    plan = "few-shot: 4-fold cross-validation, then the final model: 5 trainings"
    assert plan in result.output and result.output.index(plan) < result.output.index("few-shot fold 1/4")

    found = read_json(run.root / "few_shot.json")
    assert found["folds"] == 4 and found["kept_explicit"] == ["learning_rate"]
    assert "learning_rate" not in found["changed"] and found["changed"]["weight_decay"] == [0.0, 0.01]
    folds = sorted((run.root / "few_shot").glob("fold-*"))
    assert len(folds) == 4  # k trainings, one per fold
    for fold in folds:
        fold_rows = read_jsonl(fold / "data" / "train.jsonl") + read_jsonl(fold / "data" / "validation.jsonl")
        assert sorted(r["text"] for r in fold_rows) == sorted(r["text"] for r in train_rows)
        assert read_json(fold / "fold.json")["validation_loss_by_epoch"]
        assert not (fold / "model").exists()  # only the numbers are kept
    assert 1 <= found["chosen_epochs"] <= 4 and found["cv_validation_loss"]["std"] >= 0

    summary = read_json(run.root / "train_summary.json")
    steps_per_epoch = math.ceil(len(train_rows) / 4)  # the final model sees all 18 rows each epoch
    assert summary["steps"] == found["chosen_epochs"] * steps_per_epoch
    assert found["final"]["epochs"] == found["chosen_epochs"] and found["final"]["train_rows"] == 18
    assert found["final"]["settings"]["early_stopping_patience"] is None
    assert f"{found['folds']}-fold cross-validation" in render_report(run)

    resumed = invoke("train", str(tmp_path / "run.yaml"), "--resume")
    assert resumed.exit_code == 0 and "already finished" in resumed.output


def test_sft_runs_the_preset_too_and_explicit_epochs_are_kept(tmp_path, tiny_model_dir, monkeypatch):
    from conftest import FACTS, chat_row

    monkeypatch.setattr(few_shot, "SEARCH_EPOCHS", 2.0)
    rows = [chat_row(q, a) for q, a, _ in FACTS] * 2  # 12 rows: 11 train, 2 folds
    raw = _few_shot_config(tmp_path, tiny_model_dir, rows, preset="few_shot", epochs=1)
    result = invoke("train", str(write_config(tmp_path / "run.yaml", raw)))
    assert result.exit_code == 0, result.output
    found = read_json(RunDir(tmp_path / "run").root / "few_shot.json")
    assert found["folds"] == 2 and "epochs" in found["kept_explicit"]
    assert "3 trainings of up to 1 epochs" in result.output and "min at most" in result.output  # chat: estimated
    assert found["final"]["epochs"] == 1  # the user's explicit epochs win over the cross-validated choice
