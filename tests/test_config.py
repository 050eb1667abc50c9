"""The run config: YAML + --set overrides, and errors that name the key, the value and what is allowed."""

from __future__ import annotations

import pytest

from tuneloop.config.load import apply_override, load_config
from tuneloop.config.schema import generation_metrics
from tuneloop.errors import ConfigError

MINIMAL = "data:\n  train_file: train.jsonl\n"


def write(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_minimal_config_gets_documented_defaults(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.model.name == "smollm2-135m-instruct"
    assert config.train.method == "lora" and config.train.lora.rank == 16
    assert config.data.format == "auto" and not config.data.train_on_prompt


def test_generation_metrics_follow_the_data_format_unless_listed(tmp_path):
    config = load_config(write(tmp_path, MINIMAL))
    assert config.evaluate.metrics is None  # stays null in config.yaml, so `tuneloop evaluate` picks the same list
    assert generation_metrics(config.evaluate, "summarization")[:3] == ["rouge_1", "rouge_2", "rouge_l"]
    assert "exact_match" not in generation_metrics(config.evaluate, "summarization")
    assert generation_metrics(config.evaluate, "chat")[:2] == ["exact_match", "contains_answer"]
    listed = load_config(write(tmp_path, MINIMAL), ["evaluate.metrics=[rouge_2]"])
    assert generation_metrics(listed.evaluate, "summarization") == ["rouge_2"]
    with pytest.raises(ConfigError, match="unknown metric"):
        load_config(write(tmp_path, MINIMAL), ["evaluate.metrics=[rouge_3]"])


def test_overrides_parse_values_as_yaml(tmp_path):
    config = load_config(
        write(tmp_path, MINIMAL),
        ["train.learning_rate=1e-4", "train.lora.target_modules=[q_proj, v_proj]", "evaluate.baseline=false"],
    )
    assert config.train.learning_rate == pytest.approx(1e-4)
    assert config.train.lora.target_modules == ["q_proj", "v_proj"]
    assert config.evaluate.baseline is False


def test_every_problem_is_listed_with_key_value_and_allowed(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, MINIMAL), ["train.method=lora2", "train.lr=3", "train.batch_size=0"])
    message = str(caught.value)
    assert "3 problem(s)" in message
    assert "train.method" in message and "'lora2'" in message and "'qlora', 'ia3'" in message
    assert "train.lr: unknown key. Did you mean 'train.learning_rate'?" in message
    assert "train.batch_size" in message and "greater than or equal to 1" in message


def test_unknown_section_suggests_the_close_one(tmp_path):
    with pytest.raises(ConfigError, match="trian: unknown key. Did you mean 'train'"):
        load_config(write(tmp_path, MINIMAL + "trian:\n  epochs: 1\n"))


def test_missing_train_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="data.train_file: required but missing"):
        load_config(write(tmp_path, "data: {}\n"))


def test_bad_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"run.yaml:5: not valid YAML \(mapping values are not allowed here"):
        load_config(write(tmp_path, "data:\n  train_file: a\ntrain:\n  epochs: 3\n   lr: 1\n"))


def test_missing_config_file_suggests_init(tmp_path):
    with pytest.raises(ConfigError, match="tuneloop init"):
        load_config(tmp_path / "nope.yaml")


def test_override_without_equals_is_explained():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_override({}, "train.learning_rate")


def test_override_into_a_value_is_explained():
    with pytest.raises(ConfigError, match="'learning_rate' is a value"):
        apply_override({"train": {"learning_rate": 1}}, "train.learning_rate.x=2")
