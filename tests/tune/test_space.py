"""The search block: parsing, every error naming its key, suggestions, and a grid that enumerates exactly."""

from __future__ import annotations

import copy
import itertools

import optuna
import pytest

from tuneloop.config.load import validate_config
from tuneloop.config.search_space import parse_space
from tuneloop.errors import ConfigError
from tuneloop.tune.space import grid_size, suggest
from tuneloop.tune.study import make_sampler, plan_study

BASE = {"data": {"train_file": "train.jsonl"}}


def config_with(space: dict, **search) -> dict:
    raw = copy.deepcopy(BASE)
    raw["search"] = {"space": space} | search
    return raw


def problems_of(space: dict, **search) -> str:
    with pytest.raises(ConfigError) as caught:
        validate_config(config_with(space, **search))
    return str(caught.value)


def test_a_valid_space_parses_dotted_and_nested_keys():
    config = validate_config(config_with({
        "train.learning_rate": {"log_uniform": [1.0e-5, 1.0e-3]},
        "train": {"lora": {"rank": {"choice": [8, 16, 32]}}},  # what --set search.space.train.lora.rank... builds
        "train.epochs": {"int": [1, 6]},
        "train.warmup_ratio": {"uniform": [0.0, 0.2], "step": 0.05},
    }))
    params, problems = parse_space(config.search.space)
    assert problems == []
    assert {p.key: p.kind for p in params} == {"train.learning_rate": "log_uniform", "train.lora.rank": "choice",
                                               "train.epochs": "int", "train.warmup_ratio": "uniform"}
    assert config.search.objective.resolved_direction == "minimize"  # validation_loss


@pytest.mark.parametrize("space, expected", [
    ({"train.lerning_rate": {"uniform": [0.0, 0.1]}},
     "search.space.train.lerning_rate: not a config key. Did you mean 'train.learning_rate'?"),
    ({"train.lora": {"choice": [1, 2]}}, "search.space.train.lora: 'train.lora' is a section"),
    ({"train.epochs": {"int": [4, 2]}}, "search.space.train.epochs: empty range"),
    ({"train.learning_rate": {"uniform": [1.0e-3, 1.0e-3]}}, "search.space.train.learning_rate: empty range"),
    ({"train.learning_rate": {"log_uniform": [0.0, 1.0e-3]}},
     "search.space.train.learning_rate: log_uniform needs lo > 0"),
    ({"train.learning_rate": {"log_uniform": [1.0e-5, 2.0]}},
     "search.space.train.learning_rate: 2.0 is outside what train.learning_rate accepts: Input should be less than 1"),
    ({"train.lora.rank": {"choice": [0, 8]}},
     "search.space.train.lora.rank: 0 is outside what train.lora.rank accepts"),
    ({"train.lr_scheduler": {"choice": ["linear", "wavy"]}},
     "search.space.train.lr_scheduler: 'wavy' is outside what train.lr_scheduler accepts"),
    ({"train.batch_size": {"uniform": [2, 8]}}, "search.space.train.batch_size: train.batch_size takes whole numbers"),
    ({"train.epochs": {"int": [1.5, 3]}}, "search.space.train.epochs: int takes whole-number ends"),
    ({"train.epochs": {"int": [1, 4], "step": 2}}, "search.space.train.epochs: hi - lo must be a whole number"),
    ({"train.epochs": {"between": [1, 3]}}, "search.space.train.epochs: expected exactly one of"),
    ({"train.epochs": 3}, "search.space.train.epochs: expected {log_uniform"),
    ({"train.lora.rank": {"choice": []}}, "search.space.train.lora.rank: choice takes a non-empty list"),
    ({"train.lora.rank": {"choice": [8, 8]}}, "search.space.train.lora.rank: choice lists a value twice"),
    ({"data.test_file": {"choice": ["a.jsonl", "b.jsonl"]}}, "search.space.data.test_file: not searchable"),
    ({"output_dir": {"choice": ["a", "b"]}}, "search.space.output_dir: not searchable"),
    ({}, "search.space: empty"),
])
def test_every_space_error_names_its_key(space, expected):
    assert expected in problems_of(space)


def test_all_problems_are_reported_at_once():
    message = problems_of({"train.epochs": {"int": [3, 1]}, "train.nope": {"choice": [1]}})
    assert "2 problem(s)" in message and "train.epochs" in message and "train.nope" in message


def test_a_grid_over_a_continuous_range_is_a_config_error():
    message = problems_of({"train.learning_rate": {"log_uniform": [1.0e-5, 1.0e-3]}}, sampler="grid")
    assert "search.space.train.learning_rate: the grid sampler needs listed values" in message


def test_objective_direction_that_picks_the_worst_is_refused():
    with pytest.raises(ConfigError, match="search.objective: .*direction=maximize on validation_loss"):
        validate_config(config_with({"train.epochs": {"int": [1, 2]}},
                                    objective={"metric": "validation_loss", "direction": "maximize"}))
    with pytest.raises(ConfigError, match="search.objective.metric: unknown objective metric"):
        validate_config(config_with({"train.epochs": {"int": [1, 2]}}, objective={"metric": "acuracy"}))
    accuracy = validate_config(config_with({"train.epochs": {"int": [1, 2]}}, objective={"metric": "accuracy"}))
    assert accuracy.search.objective.resolved_direction == "maximize"


def test_suggestions_stay_inside_the_space():
    config = validate_config(config_with({
        "train.learning_rate": {"log_uniform": [1.0e-5, 1.0e-3]}, "train.epochs": {"int": [1, 6], "step": 1},
        "train.lora.rank": {"choice": [8, 16]}, "train.warmup_ratio": {"uniform": [0.0, 0.2], "step": 0.05},
    }))
    params, _ = parse_space(config.search.space)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(30):
        values = suggest(study.ask(), params)
        assert 1.0e-5 <= values["train.learning_rate"] <= 1.0e-3
        assert values["train.epochs"] in range(1, 7) and values["train.lora.rank"] in (8, 16)
        assert round(values["train.warmup_ratio"] / 0.05, 6) % 1 == 0


def test_a_grid_enumerates_exactly_its_points(tmp_path):
    raw = config_with({"train.lora.rank": {"choice": [4, 8, 16]}, "train.epochs": {"int": [1, 3], "step": 2}},
                      sampler="grid", trials=50)
    raw["output_dir"] = str(tmp_path / "grid")
    plan = plan_study(validate_config(raw))
    assert grid_size(plan.params) == 6 and plan.target() == 6  # 50 trials asked; the grid has 6 points
    study = optuna.create_study(sampler=make_sampler(plan, seed=0, target=plan.target()))
    seen = []
    study.optimize(lambda trial: seen.append(tuple(sorted(suggest(trial, plan.params).items()))) or 0.0,
                   n_trials=plan.target())
    expected = {tuple(sorted({"train.lora.rank": r, "train.epochs": e}.items()))
                for r, e in itertools.product([4, 8, 16], [1, 3])}
    assert len(seen) == 6 and set(seen) == expected


def test_the_cli_reports_space_errors_and_run_says_it_ignores_the_search(tmp_path):
    from conftest import write_config
    from typer.testing import CliRunner

    from tuneloop.cli import app
    from tuneloop.errors import TuneloopError

    runner = CliRunner()
    bad = write_config(tmp_path / "bad.yaml", config_with({"train.lora.rank": {"choice": [0, 8]}}))
    result = runner.invoke(app, ["validate", str(bad)])
    assert isinstance(result.exception, ConfigError) and result.exception.exit_code == 2
    assert "search.space.train.lora.rank: 0 is outside" in str(result.exception)
    good = config_with({"train.lora.rank": {"choice": [4, 8]}})
    good["output_dir"] = str(tmp_path / "run")
    good["data"]["train_file"] = str(tmp_path / "missing.jsonl")  # run stops at the missing file, after the notice
    result = runner.invoke(app, ["run", str(write_config(tmp_path / "good.yaml", good))])
    assert isinstance(result.exception, TuneloopError) and "no such file" in str(result.exception)
    assert "the search block is ignored by `tuneloop run`" in result.output and "tuneloop tune" in result.output
