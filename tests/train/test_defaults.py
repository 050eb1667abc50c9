"""The defaults table: which entry a run gets, that a user's value wins, the fallback, and what a run records."""

from __future__ import annotations

import yaml
from conftest import write_config
from typer.testing import CliRunner

from tuneloop.cli import app
from tuneloop.config.load import validate_config
from tuneloop.config.schema import TrainConfig
from tuneloop.models.facts import ModelFacts, model_facts
from tuneloop.report.html import render_report
from tuneloop.train.defaults import METHOD_TABLE, SETTINGS_TABLE, choose_defaults, format_value, with_train_values
from tuneloop.workspace import RunDir, read_json

ENCODER = ModelFacts("encoder", 22_713_216)
SMALL_LM = ModelFacts("causal-lm", 134_515_008)


def train_section(**keys) -> TrainConfig:
    return validate_config({"data": {"train_file": "x.jsonl"}, "train": keys}).train


def test_a_small_encoder_classifier_is_fully_fine_tuned_with_the_measured_rate():
    chosen = choose_defaults(train_section(), "classify", ENCODER, 800)
    values = chosen.updates()
    assert values["method"] == "full" and values["learning_rate"] != TrainConfig().learning_rate
    said = "\n".join(chosen.lines())
    assert "23M encoder, 800 training rows" in said and "benchmarks/" in said


def test_a_value_the_user_set_always_wins():
    chosen = choose_defaults(train_section(learning_rate=3e-5), "classify", ENCODER, 800)
    assert "learning_rate" not in chosen.updates() and chosen.updates()["method"] == "full"
    assert "learning_rate" in chosen.kept and "kept your train.learning_rate" in "\n".join(chosen.lines())
    lora = choose_defaults(train_section(method="lora"), "classify", ENCODER, 800)
    assert lora.updates() == {} and "lora" in lora.fallback  # no measured LoRA entry here: said, not guessed


def test_an_unknown_model_kind_falls_back_to_the_generic_defaults_and_says_why():
    chosen = choose_defaults(train_section(), "sft", ModelFacts("unknown", None, "org/model is not on this machine"),
                             500)
    assert chosen.updates() == {}
    assert "org/model is not on this machine" in chosen.fallback and "generic defaults" in chosen.fallback


def test_every_entry_names_what_measured_it_and_sets_only_real_keys():
    for entry in METHOD_TABLE + SETTINGS_TABLE:
        assert entry.benchmark and entry.when
        with_train_values(TrainConfig(), entry.values)  # a misspelt key would raise here
        for key in entry.values:
            node = TrainConfig()
            for part in key.split("."):
                node = getattr(node, part)


def test_values_are_printed_the_way_people_write_them():
    assert [format_value(v) for v in (1e-4, 6.5e-4, 0.06, 3.0, "full")] == ["1e-4", "6.5e-4", "0.06", "3", "full"]


def test_model_facts_read_kind_and_size_without_loading(tiny_model_dir):
    facts = model_facts(str(tiny_model_dir))
    assert facts.kind == "causal-lm" and 10_000 < facts.parameters < 100_000
    assert model_facts("someone/not-here").kind == "unknown"


def test_a_minimal_config_runs_with_the_table_and_records_why(tmp_path, tiny_model_dir, tiny_data):
    raw = {"output_dir": str(tmp_path / "run"), "model": {"name": str(tiny_model_dir), "dtype": "fp32"},
           "data": {"train_file": str(tiny_data["train"]), "test_file": str(tiny_data["test"]), "max_length": 64},
           "train": {"max_steps": 2, "preset": "none"}, "evaluate": {"max_new_tokens": 4, "baseline": False},
           "tracking": {"backend": "none"}}
    config_path = write_config(tmp_path / "minimal.yaml", raw)
    result = CliRunner().invoke(app, ["run", str(config_path)])
    assert result.exit_code == 0, result.output
    assert "defaults: train.learning_rate 1e-3" in result.output and "LoRA SFT of a small LM" in result.output
    run = RunDir(tmp_path / "run")
    written = yaml.safe_load(run.config.read_text())
    assert written["train"]["learning_rate"] == 1e-3 and written["train"]["max_steps"] == 2
    assert run.config.read_text().startswith("# defaults: ")
    recorded = read_json(run.root / "defaults.json")
    assert {c["key"] for c in recorded["chosen"]} >= {"learning_rate"} and "max_steps" not in recorded["kept"]
    assert "Defaults chosen" in render_report(run)
    again = CliRunner().invoke(app, ["run", str(config_path), "--resume"])  # config.yaml now differs from the file
    assert again.exit_code == 0, again.output
    # The interrupt message and the UI's Resume name the run's own config.yaml, which holds the table's values.
    from_run = CliRunner().invoke(app, ["run", str(run.config), "--resume"])
    assert from_run.exit_code == 0, from_run.output
    assert "defaults: as chosen when the run started" in from_run.output
    assert read_json(run.root / "defaults.json") == recorded  # a resume does not re-record the choices
    changed = CliRunner().invoke(app, ["run", str(run.config), "--resume", "--set", "train.learning_rate=0.5"])
    assert changed.exit_code != 0 and "train.learning_rate" in str(changed.exception)

    explicit = write_config(tmp_path / "explicit.yaml", raw | {"output_dir": str(tmp_path / "explicit"),
                                                               "train": {**raw["train"], "learning_rate": 5e-3}})
    result = CliRunner().invoke(app, ["run", str(explicit)])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load((tmp_path / "explicit" / "config.yaml").read_text())["train"]["learning_rate"] == 5e-3
    assert "defaults: kept your train.learning_rate" in result.output
