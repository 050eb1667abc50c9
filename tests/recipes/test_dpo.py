"""The DPO family on the tiny random Llama: DPO with LoRA (reference = adapter off), SimPO and ORPO, the report,
the reward-model score and the safety gate, and recipe/data mismatches."""

from __future__ import annotations

import pytest
import torch
from conftest import FACTS, chat_row, preference_run_config, write_jsonl
from transformers import AutoModelForCausalLM

from tuneloop.config.load import validate_config
from tuneloop.errors import ConfigError
from tuneloop.stages import data_stage, open_for_run, run_all, train_stage
from tuneloop.workspace import RunDir, read_json, read_jsonl


def test_dpo_with_lora_learns_the_preference_with_the_adapter_switched_off_as_reference(
        tmp_path, tiny_model_dir, pair_files, tiny_reward_run, monkeypatch):
    import trl.trainer.dpo_trainer as dpo_trainer

    def no_second_copy(*args, **kwargs):
        raise AssertionError("DPOTrainer loaded a second copy of the model as reference")

    monkeypatch.setattr(dpo_trainer, "create_model_from_path", no_second_copy)
    raw = preference_run_config(tmp_path / "run", tiny_model_dir, pair_files, "dpo", max_steps=8,
                                preference={"beta": 0.5, "sft_weight": 0.1})
    # Every held-out pair scored by likelihood (max_pairs), generations for only the first two prompts.
    raw["evaluate"].update(reward_model=str(tiny_reward_run), max_samples=2, max_pairs=len(FACTS),
                           safety={"prompts": str(pair_files["test"]), "scorer": str(tiny_reward_run)})
    run, results = run_all(validate_config(raw), console_print=lambda *_: None)
    assert results["heldout"]["pairs"] == len(FACTS) > 2 and results["heldout"]["generation_prompts"] == 2
    assert len(read_jsonl(run.samples)) == 2

    log = read_jsonl(run.train_log)
    losses = [r["loss"] for r in log if "loss" in r and "eval_loss" not in r]
    assert losses[-1] < losses[0]  # DPO's loss starts at log 2 with the policy equal to the reference
    assert any("rewards/margins" in r and "rewards/accuracies" in r for r in log)
    assert (run.adapter / "adapter_config.json").is_file() and not (run.adapter / "ref").exists()

    # The base weights are untouched: with the adapter off the tuned model is the base model exactly.
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(run.adapter))
    ids = torch.tensor([[5, 17, 42, 9, 3]])
    with torch.no_grad():
        with tuned.disable_adapter():
            assert torch.equal(tuned(ids).logits, base(ids).logits)
        assert not torch.allclose(tuned(ids).logits, base(ids).logits)

    assert results["baseline"]["implicit_reward_accuracy"] == 50.0
    assert results["baseline"]["implicit_reward_margin"] == 0
    assert results["tuned"]["implicit_reward_margin"] > 0
    for key in ("preference_accuracy", "reward_score", "reply_words", "kl_from_base"):
        assert key in results["tuned"] and key in results["baseline"]
    assert results["comparison"]["preference_accuracy"]["test"] == "mcnemar"
    assert results["safety"]["prompts"] == len(FACTS) and results["status"] in ("passed", "failed")
    report = (run.root / "report.html").read_text()
    assert "preference_accuracy" in report and "Preference training curves" in report and "Safety gate" in report
    assert read_json(run.root / "train_summary.json")["recipe"] == "dpo"


@pytest.mark.parametrize("recipe", ["simpo", "orpo"])
def test_reference_free_recipes_train_and_save_an_adapter(tmp_path, tiny_model_dir, pair_files, recipe):
    raw = preference_run_config(tmp_path / "run", tiny_model_dir, pair_files, recipe, max_steps=3)
    run, summary = run_all(validate_config(raw), evaluate=False, console_print=lambda *_: None)
    assert summary["recipe"] == recipe and summary["steps"] == 3
    assert (run.adapter / "adapter_config.json").is_file()
    assert any("rewards/margins" in r for r in read_jsonl(run.train_log))


def test_a_recipe_that_does_not_fit_the_data_names_train_recipe(tmp_path, tiny_model_dir, pair_files):
    chat = write_jsonl(tmp_path / "chat.jsonl", [chat_row(q, a) for q, a, _ in FACTS] * 2)
    raw = preference_run_config(tmp_path / "run", tiny_model_dir, {"train": chat, "test": chat}, "dpo")
    config = validate_config(raw)
    run = open_for_run(config)
    data_stage(config, run, console_print=lambda *_: None)
    with pytest.raises(ConfigError, match=r"train.recipe='dpo' trains on preference data.*chat format.*sft"):
        train_stage(config, run, console_print=lambda *_: None)

    raw = preference_run_config(tmp_path / "run2", tiny_model_dir, pair_files, "sft")
    config = validate_config(raw)
    run = open_for_run(config)
    data_stage(config, run, console_print=lambda *_: None)
    with pytest.raises(ConfigError, match=r"train.recipe='sft'.*preference format.*auto \(or cpo, dpo, kto"):
        train_stage(config, RunDir(run.root), console_print=lambda *_: None)


def test_a_loss_dpo_does_not_take_is_a_config_error(tmp_path, tiny_model_dir, pair_files):
    raw = preference_run_config(tmp_path / "run", tiny_model_dir, pair_files, "dpo", preference={"loss": "kto"})
    with pytest.raises(ConfigError, match="train.preference.loss='kto'.*train.recipe kto"):
        run_all(validate_config(raw), evaluate=False, console_print=lambda *_: None)


@pytest.mark.parametrize("recipe", ["dpo", "kto"])
def test_continuing_an_adapter_makes_that_adapter_the_reference(tmp_path, tiny_model_dir, pair_files, adapter_runs,
                                                                recipe):
    """What `tuneloop retrain --recipe dpo|kto` does from a served run: the served adapter is the reference."""
    from peft import PeftModel

    served = adapter_runs["alpha"] / "adapter"  # random LoRA weights: far from the base model
    raw = preference_run_config(tmp_path / "run", tiny_model_dir, pair_files, recipe, max_steps=2)
    raw["model"]["adapter"] = str(served)
    said = []
    run, _ = run_all(validate_config(raw), console_print=said.append)
    assert any(f"reference: the adapter training starts from ({served}), frozen" in line for line in said)
    first = next(r for r in read_jsonl(run.train_log) if "loss" in r and "eval_loss" not in r)
    # Policy equal to the reference at the first step: zero rewards, DPO's loss log 2 and KTO's 0.5 exactly.
    assert first["rewards/chosen"] == 0.0 and first["rewards/rejected"] == 0.0
    assert first["loss"] == pytest.approx(0.6931472 if recipe == "dpo" else 0.5, abs=1e-6)
    # Which the base model could not give: the served adapter moves the log-probs far from the base's.
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    adapted = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(served))
    ids = torch.tensor([[5, 17, 42, 9, 3, 11, 8]])
    with torch.no_grad():
        gap = (adapted(ids).logits.log_softmax(-1) - base(ids).logits.log_softmax(-1)).abs().max()
    assert gap > 0.5
    # The saved adapter is the trained one alone, not the frozen reference copy beside it.
    assert not (run.adapter / "ref").exists() and (run.adapter / "adapter_model.safetensors").is_file()
