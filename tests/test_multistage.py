"""Multi-stage runs: config merging and error keys, pre-flight checks, a 2-stage run (text CPT -> chat SFT), resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import FACTS, TEST_DEVICE, chat_row, write_config, write_jsonl
from typer.testing import CliRunner

from tuneloop.cli import app
from tuneloop.config.load import load_config, read_config
from tuneloop.errors import ConfigError, TuneloopError
from tuneloop.multistage import deep_merge, preflight, validate_chain
from tuneloop.workspace import RunDir, read_json

runner = CliRunner()


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    if isinstance(result.exception, TuneloopError):
        raise result.exception
    return result


def chain_raw(tmp_path: Path, **top) -> dict:
    return {
        "output_dir": str(tmp_path / "chain"),
        "train": {"epochs": 1, "learning_rate": 1e-3},
        "stages": [
            {"name": "domain", "data": {"train_file": "notes.txt", "format": "text"}, "train": {"method": "full"}},
            {"name": "assistant", "data": {"train_file": "qa.jsonl"}, "train": {"lora": {"rank": 4}}},
        ],
        **top,
    }


def test_stages_inherit_the_top_level_sections_and_start_from_the_previous_output(tmp_path):
    chain = validate_chain(chain_raw(tmp_path, model={"name": "smollm2-135m-instruct", "dtype": "fp32"}))
    domain, assistant = chain.stages
    assert domain.config.train.method == "full" and domain.config.train.epochs == 1
    assert domain.config.data.format == "text" and domain.config.model.name == "smollm2-135m-instruct"
    assert domain.config.output_dir == str(tmp_path / "chain" / "stages" / "01-domain")
    assert assistant.config.model.name == str(tmp_path / "chain" / "stages" / "01-domain" / "model")
    assert assistant.config.model.dtype == "fp32"  # inherited beside the replaced name
    assert assistant.config.train.method == "lora" and assistant.config.train.lora.rank == 4
    assert assistant.config.train.lora.alpha == 32 and assistant.config.train.learning_rate == pytest.approx(1e-3)
    assert assistant.handoff == assistant.run.root / "merged"  # a LoRA stage hands on merged weights

    raw = chain_raw(tmp_path)
    raw["stages"][0]["train"] = {"method": "lora"}
    assert validate_chain(raw).stages[1].config.model.name.endswith("01-domain/merged")
    assert deep_merge({"a": {"b": 1, "c": [1]}}, {"a": {"c": [2]}, "d": 3}) == {"a": {"b": 1, "c": [2]}, "d": 3}


def test_stage_errors_name_the_key_with_the_stage_and_default_errors_are_named_once(tmp_path):
    raw = chain_raw(tmp_path)
    raw["train"]["batch_size"] = 0  # a bad default: one problem, not one per stage
    raw["stages"][1]["train"]["learning_rate"] = -1
    raw["stages"][0]["trian"] = {"epochs": 2}
    raw["stages"].append({"name": "domain", "model": {"name": "other"}, "output_dir": "x"})
    with pytest.raises(ConfigError) as caught:
        validate_chain(raw, "chain.yaml")
    message = str(caught.value)
    assert message.count("train.batch_size") == 1 and "  - train.batch_size: Input should be greater" in message
    assert "stages[1].train.learning_rate: Input should be greater than 0 (got -1)" in message
    assert "stages[0].trian: unknown key. Did you mean 'stages[0].train'?" in message
    assert "stages[2].name: 'domain' is already the name of an earlier stage" in message
    assert "stages[2].model.name: a later stage starts from the previous stage's output" in message
    assert "stages[2].output_dir: each stage runs in output_dir/stages/NN-name" in message
    assert "stages[2].data: required but missing" in message


def test_data_is_required_without_stages_and_single_stage_commands_refuse_stages(tmp_path):
    path = write_config(tmp_path / "plain.yaml", {"train": {"epochs": 1}})
    with pytest.raises(ConfigError, match=r"data: required but missing"):
        load_config(path)
    chained = write_config(tmp_path / "chain.yaml", chain_raw(tmp_path))
    with pytest.raises(ConfigError, match="lists stages .*tuneloop run"):
        load_config(chained)
    raw, _ = read_config(chained, ["stages.assistant.train.epochs=3", "stages.0.data.max_length=64"])
    chain = validate_chain(raw)
    assert chain.stages[1].config.train.epochs == 3 and chain.stages[0].config.data.max_length == 64
    with pytest.raises(ConfigError, match="no list item 'nope'"):
        read_config(chained, ["stages.nope.train.epochs=3"])


def test_a_stage_whose_recipe_does_not_fit_its_data_fails_before_any_training(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("Some domain text.\n\nMore of it.\n", encoding="utf-8")
    preference = write_jsonl(tmp_path / "pairs.jsonl", [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go."}])
    raw = chain_raw(tmp_path)
    raw["stages"][0]["data"]["train_file"] = str(notes)
    raw["stages"][1] = {"name": "dpo", "data": {"train_file": str(preference)}, "train": {"recipe": "sft"}}
    config = write_config(tmp_path / "chain.yaml", raw)
    with pytest.raises(TuneloopError, match=r"stages\[1\].train.recipe='sft' trains on .* but this run's data is "
                                            r"in the preference format"):
        invoke("run", str(config))
    assert not (tmp_path / "chain" / "stages").exists()  # nothing started

    labelled = write_jsonl(tmp_path / "labels.jsonl", [{"text": "fine", "label": "pos"}])
    raw["stages"] = [{"name": "cls", "data": {"train_file": str(labelled)}}, raw["stages"][0]]
    raw["stages"][1]["name"] = "after"
    with pytest.raises(TuneloopError, match=r"stages\[0\].data: .*classification data.*last one"):
        preflight(validate_chain(raw))
    raw["stages"][1]["data"]["train_file"] = str(tmp_path / "missing.txt")
    with pytest.raises(TuneloopError, match=r"stages\[1\].data.train_file: .*missing.txt: no such file"):
        invoke("validate", str(write_config(tmp_path / "chain.yaml", raw)))


def two_stage_config(tmp_path: Path, tiny_model_dir: Path) -> Path:
    """Text CPT (LoRA, so the handoff goes through a merge) -> chat SFT (LoRA), both scoring one general text."""
    notes = tmp_path / "notes.txt"
    notes.write_text("\n\n".join(f"Note {i}: the {q.lower()} {a}" for i in range(4) for q, a, _ in FACTS) + "\n",
                     encoding="utf-8")
    general = tmp_path / "general.txt"
    general.write_text("The weather was mild and the market opened late.\n\nChildren walked to school.\n",
                       encoding="utf-8")
    qa = write_jsonl(tmp_path / "qa.jsonl", [chat_row(q, a, key) for q, a, key in FACTS] * 3)
    raw = {
        "output_dir": str(tmp_path / "chain"),
        "model": {"name": str(tiny_model_dir), "dtype": "fp32" if TEST_DEVICE == "cpu" else "auto",
                  "device": TEST_DEVICE},
        "data": {"max_length": 48},
        "train": {"max_steps": 4, "learning_rate": 1e-2, "batch_size": 4, "eval_every": 2, "save_every": 2,
                  "early_stopping_patience": None, "logging_steps": 1, "lora": {"rank": 4, "alpha": 8, "dropout": 0.0}},
        "evaluate": {"max_new_tokens": 4, "batch_size": 4, "general_text": [str(general)], "intervals": False},
        "tracking": {"backend": "none"},
        "stages": [
            {"name": "domain", "data": {"train_file": str(notes), "test_size": 0.2}},
            {"name": "assistant", "data": {"train_file": str(qa)}, "train": {"max_steps": 3}},
        ],
    }
    return write_config(tmp_path / "chain.yaml", raw)


def test_two_stages_run_end_to_end_and_the_second_starts_from_the_first(tmp_path, tiny_model_dir):
    config = two_stage_config(tmp_path, tiny_model_dir)
    result = invoke("run", str(config))
    assert result.exit_code == 0, result.output
    root = tmp_path / "chain"
    domain, assistant = RunDir(root / "stages" / "01-domain"), RunDir(root / "stages" / "02-assistant")
    assert read_json(domain.root / "train_summary.json")["task"] == "continued pretraining"
    assert read_json(domain.metrics)["task"] == "continued pretraining"
    assert (domain.root / "merged" / "config.json").is_file() and (domain.adapter / "adapter_config.json").is_file()

    # The second stage's base model is the first stage's merged output...
    assert load_config(assistant.config).model.name == str(domain.root / "merged")
    adapter = json.loads((assistant.adapter / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == str(domain.root / "merged")
    # ...numerically too: stage 2's baseline on the shared general text is stage 1's tuned model, which
    # differs from the untouched starting model.
    first, second = read_json(domain.metrics), read_json(assistant.metrics)
    assert second["baseline"]["general_perplexity"] == pytest.approx(first["tuned"]["general_perplexity"], rel=1e-3)
    assert first["tuned"]["general_perplexity"] != pytest.approx(first["baseline"]["general_perplexity"], rel=1e-3)
    assert {"contains_answer", "general_perplexity"} <= set(second["tuned"])

    state = read_json(root / "chain.json")["stages"]
    assert [(s["name"], s["recipe"], s["status"]) for s in state] == [
        ("domain", "pretrain", "finished"), ("assistant", "sft", "finished")]
    report = (root / "report.html").read_text()
    assert "stages/01-domain/report.html" in report and "stages/02-assistant/report.html" in report
    assert "domain_perplexity" in report and "General text along the chain" in report
    assert (domain.root / "report.html").is_file() and (assistant.root / "report.html").is_file()
    assert invoke("report", str(root)).exit_code == 0

    with pytest.raises(TuneloopError, match="already holds a multi-stage run"):
        invoke("run", str(config))


def test_resume_skips_a_finished_stage_and_continues_the_interrupted_one(tmp_path, tiny_model_dir, monkeypatch):
    import tuneloop.stages
    from tuneloop.errors import TrainingInterrupted

    config = two_stage_config(tmp_path, tiny_model_dir)
    real_run_all = tuneloop.stages.run_all

    def stop_in_second_stage(stage_config, **kwargs):
        if stage_config.output_dir.endswith("02-assistant"):
            raise TrainingInterrupted("interrupted at step 1")
        return real_run_all(stage_config, **kwargs)

    monkeypatch.setattr(tuneloop.stages, "run_all", stop_in_second_stage)
    with pytest.raises(TrainingInterrupted, match=r"stage 2/2 assistant was interrupted.*tuneloop run .*chain.yaml "
                                                  r"--resume"):
        invoke("run", str(config))
    monkeypatch.setattr(tuneloop.stages, "run_all", real_run_all)
    root = tmp_path / "chain"
    assert [s["status"] for s in read_json(root / "chain.json")["stages"]] == ["finished", "pending"]
    first_metrics = (root / "stages" / "01-domain" / "metrics.json").stat().st_mtime_ns

    changed = runner.invoke(app, ["run", str(config), "--resume", "--set", "stages.domain.train.learning_rate=0.5"])
    assert changed.exit_code != 0 and "train.learning_rate" in str(changed.exception)

    resumed = invoke("run", str(config), "--resume")
    assert resumed.exit_code == 0, resumed.output
    assert "stage 1/2 domain: finished earlier; skipping" in resumed.output
    assert (root / "stages" / "01-domain" / "metrics.json").stat().st_mtime_ns == first_metrics
    assert [s["status"] for s in read_json(root / "chain.json")["stages"]] == ["finished", "finished"]
    assert (root / "stages" / "02-assistant" / "metrics.json").is_file()
