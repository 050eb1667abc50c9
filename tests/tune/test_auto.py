"""`tuneloop run --auto BUDGET` on the tiny Llama: plan first, trial 0 = the defaults table, the test set scored once,
a budget too small for one trial refused with exit code 2, and the same command continuing the study."""

from __future__ import annotations

import pytest
from conftest import write_config
from typer.testing import CliRunner

from tuneloop.cli import app
from tuneloop.errors import ConfigError
from tuneloop.tune.auto import BudgetTooSmall, auto_space, parse_budget
from tuneloop.workspace import read_json

runner = CliRunner()


def minimal_raw(tiny_config: dict, output_dir) -> dict:
    """The tiny run with only what makes it quick: no learning rate, epochs or rank, which --auto searches."""
    raw = {key: value for key, value in tiny_config.items() if key != "train"}
    raw["output_dir"] = str(output_dir)
    raw["train"] = {"batch_size": 4, "eval_every": 6, "logging_steps": 1, "lora": {"alpha": 32}}
    return raw


def test_budgets_are_read_with_their_unit():
    assert parse_budget("30m") == 1800 and parse_budget("1h30m") == 5400 and parse_budget("90s") == 90
    with pytest.raises(ConfigError, match="with a unit"):
        parse_budget("30")


def test_the_space_leaves_out_nothing_that_matters_for_sft():
    space = auto_space("sft", {"learning_rate": 1e-3, "epochs": 6.0, "method": "lora", "lora": {"rank": 16},
                               "batch_size": 8})
    assert set(space) == {"train.learning_rate", "train.epochs", "train.lora.rank"}
    low, high = space["train.learning_rate"]["log_uniform"]
    assert low < 1e-3 < high


def test_too_small_a_budget_exits_2_with_the_estimate(tiny_config, tmp_path):
    path = write_config(tmp_path / "auto.yaml", minimal_raw(tiny_config, tmp_path / "study"))
    result = runner.invoke(app, ["run", str(path), "--auto", "2s"])
    assert isinstance(result.exception, BudgetTooSmall), result.output
    assert result.exception.exit_code == 2  # what `tuneloop` exits with (cli.main)
    assert "too small for even one trial" in str(result.exception) and "one training takes about" in str(
        result.exception) and "training(s) of about" in result.output
    assert not (tmp_path / "study" / "study.db").exists()


def test_auto_plans_searches_from_the_defaults_and_scores_the_test_set_once(tiny_config, tmp_path):
    path = write_config(tmp_path / "auto.yaml", minimal_raw(tiny_config, tmp_path / "study"))
    dry = runner.invoke(app, ["run", str(path), "--auto", "4m", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "training(s) of about" in dry.output and "nothing trained" in dry.output
    assert not (tmp_path / "study").exists()

    result = runner.invoke(app, ["run", str(path), "--auto", "4m"])
    assert result.exit_code == 0, result.output
    root = tmp_path / "study"
    results = read_json(root / "results.json")
    plan = results["auto"]["plan"]
    assert plan["trial0"]["train.learning_rate"] == 1e-3  # the defaults table's value for LoRA SFT of a small LM
    assert (root / "study.db").is_file() and (root / "trials" / "0000" / "trial.json").is_file()
    assert read_json(root / "trials" / "0000" / "trial.json")["params"] == plan["trial0"]
    assert results["default"]["run_dir"].endswith("0000")  # the defaults were trial 0, not trained again
    assert results["best"]["test"]["value"] is not None and results["default"]["test"]["value"] is not None
    assert "auto: test" in result.output

    again = runner.invoke(app, ["run", str(path), "--auto", "4m"])  # the same command: continues, scores nothing twice
    assert again.exit_code == 0, again.output
    assert "continuing the study" in again.output and "already scored on the test set" in again.output
