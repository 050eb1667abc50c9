"""GRPO on the tiny random Llama: trains and saves an adapter, rewards see the data columns, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FACTS, chat_row, write_jsonl

from tuneloop.config.load import validate_config
from tuneloop.errors import ConfigError, TuneloopError
from tuneloop.multistage import preflight, run_chain, validate_chain
from tuneloop.stages import run_all
from tuneloop.train.rewards import RewardFunctionError
from tuneloop.workspace import read_json, read_jsonl

RECORDING_REWARD = '''
import json

def recorded(prompts, completions, completion_ids, answer, topic, **kwargs):
    with open(__file__ + ".calls.jsonl", "a") as handle:
        handle.write(json.dumps({"prompts": prompts, "completions": completions, "answer": answer, "topic": topic,
                                 "ids": [len(ids) for ids in completion_ids],
                                 "extra": sorted(kwargs)}) + "\\n")
    return [float(len(c[0]["content"]) % 3) for c in completions]

def broken(completions, **kwargs):
    raise ZeroDivisionError("division by zero in my scorer")

def too_few(completions, **kwargs):
    return [1.0]
'''


def prompt_rows(count: int, offset: int = 0) -> list[dict]:
    return [{"prompt": f"What is {i} plus {i + 1}?", "answer": str(2 * i + 1), "topic": "sums"}
            for i in range(offset, offset + count)]


@pytest.fixture()
def grpo_config(tmp_path, tiny_model_dir) -> dict:
    (tmp_path / "my_rewards.py").write_text(RECORDING_REWARD, encoding="utf-8")
    train = write_jsonl(tmp_path / "train.jsonl", prompt_rows(10))
    test = write_jsonl(tmp_path / "test.jsonl", prompt_rows(4, offset=50))
    return {
        "output_dir": str(tmp_path / "run"),
        "model": {"name": str(tiny_model_dir), "dtype": "fp32", "device": "cpu"},
        "data": {"train_file": str(train), "test_file": str(test), "max_length": 64},
        "train": {
            "method": "lora", "max_steps": 2, "learning_rate": 1e-3, "batch_size": 4, "logging_steps": 1,
            "save_every": 10, "eval_every": 10, "lora": {"rank": 4, "alpha": 8},
            "grpo": {"num_generations": 2, "max_completion_length": 8},
            "rewards": [f"{tmp_path / 'my_rewards.py'}:recorded", {"function": "answer_match", "column": "answer"}],
        },
        "evaluate": {"max_new_tokens": 8, "batch_size": 4},
        "tracking": {"backend": "none"},
    }


def test_grpo_trains_saves_the_adapter_and_passes_the_data_columns(grpo_config, tmp_path):
    run, _ = run_all(validate_config(grpo_config), console_print=lambda *a: None)

    assert (run.adapter / "adapter_config.json").is_file()
    summary = read_json(run.root / "train_summary.json")
    assert summary["recipe"] == "grpo" and summary["steps"] == 2
    assert summary["rewards"] == ["recorded", "answer_match"]
    log = read_jsonl(run.train_log)
    assert any("reward" in r and "rewards/recorded/mean" in r and "rewards/answer_match/mean" in r for r in log)
    assert any("kl" in r for r in log)  # beta > 0 by default: the KL to the adapter-off model is logged

    metrics = read_json(run.metrics)
    for side in ("baseline", "tuned"):
        assert {"reward", "reward/recorded", "reward/answer_match", "accuracy", "length_words",
                "length_tokens"} <= set(metrics[side])
        assert 0 <= metrics[side]["accuracy"] <= 100
        assert metrics[side]["reward/answer_match"] == pytest.approx(metrics[side]["accuracy"] / 100)
    assert metrics["comparison"]["accuracy"]["test"] == "mcnemar"
    assert len(metrics["intervals"]["tuned"]["reward"]) == 2
    samples = read_jsonl(run.samples)
    # the log-ratio is measured on the tuned replies' tokens: none when the random model only wrote EOS
    assert isinstance(metrics["tuned"]["kl_from_base"], float) == any(s["tuned"] for s in samples)
    assert metrics["heldout"] == {"split": "test", "rows": 4, "rows_with_answer": 4, "answer_column": "answer"}
    assert [s["reference"] for s in samples] == [r["answer"] for r in prompt_rows(4, offset=50)]
    report = (run.root / "report.html").read_text(encoding="utf-8")
    assert "Reward and KL" in report and "reward/answer_match" in report

    calls = read_jsonl(tmp_path / "my_rewards.py.calls.jsonl")
    training = calls[:2]  # two steps of training come first, then evaluation calls on the test prompts
    train_questions = {r["prompt"]: r["answer"] for r in prompt_rows(10)}
    for call in training:
        assert len(call["completions"]) == 4 and len(call["answer"]) == 4 and call["topic"] == ["sums"] * 4
        for prompt, answer in zip(call["prompts"], call["answer"], strict=True):
            assert prompt[-1]["role"] == "user" and train_questions[prompt[-1]["content"]] == answer
        assert all(c[0]["role"] == "assistant" for c in call["completions"])
        assert all(1 <= n <= 8 for n in call["ids"])  # max_completion_length
        assert "trainer_state" in call["extra"]


def test_prompt_only_data_without_a_reward_function_is_a_config_error(grpo_config):
    del grpo_config["train"]["rewards"]
    with pytest.raises(ConfigError, match=r"train\.rewards: .*no reward function is configured"):
        run_all(validate_config(grpo_config), console_print=lambda *a: None)


def test_a_reward_function_that_raises_names_itself_and_the_exception(grpo_config, tmp_path):
    grpo_config["train"]["rewards"] = [f"{tmp_path / 'my_rewards.py'}:broken"]
    with pytest.raises(RewardFunctionError, match=r"train\.rewards\[0\]: the reward function broken raised "
                                                  r"ZeroDivisionError: division by zero in my scorer"):
        run_all(validate_config(grpo_config), console_print=lambda *a: None)


def test_a_reward_function_returning_the_wrong_count_is_a_clear_error(grpo_config, tmp_path):
    grpo_config["train"]["rewards"] = [f"{tmp_path / 'my_rewards.py'}:too_few"]
    with pytest.raises(RewardFunctionError, match=r"train\.rewards\[0\]: the reward function too_few returned 1 "
                                                  r"value\(s\) for 4 replies"):
        run_all(validate_config(grpo_config), console_print=lambda *a: None)


def test_a_bad_reward_spec_stops_before_training(grpo_config):
    grpo_config["train"]["rewards"].append("answer_mach")
    with pytest.raises(ConfigError, match=r"train\.rewards\[2\]: 'answer_mach' is not a built-in.*Did you mean "
                                          r"'answer_match'"):
        run_all(validate_config(grpo_config), console_print=lambda *a: None)
    assert not Path(grpo_config["output_dir"]).exists()  # checked before the data stage


def test_batch_size_must_hold_whole_groups(grpo_config):
    grpo_config["train"]["grpo"]["num_generations"] = 3
    with pytest.raises(ConfigError, match=r"train\.batch_size: 4 .* not a multiple of train\.grpo\.num_generations=3"):
        run_all(validate_config(grpo_config), console_print=lambda *a: None)

    assert issubclass(RewardFunctionError, TuneloopError)  # the CLI prints it without a traceback


def test_a_grpo_stage_trains_after_an_sft_stage_from_its_merged_weights(grpo_config, tmp_path):
    chat = write_jsonl(tmp_path / "chat.jsonl", [chat_row(q, a) for q, a, _ in FACTS] * 2)
    grpo_train = {key: value for key, value in grpo_config["train"].items() if key not in ("max_steps", "rewards")}
    raw = {key: value for key, value in grpo_config.items() if key not in ("data", "train")}
    raw["train"] = {**grpo_train, "max_steps": 1, "preset": "none", "early_stopping_patience": None}
    raw["stages"] = [
        {"name": "sft", "data": {"train_file": str(chat), "max_length": 64}},
        {"name": "rl", "data": grpo_config["data"], "train": {"rewards": grpo_config["train"]["rewards"]}},
    ]
    chain = validate_chain(raw)

    bad = {**raw, "stages": [raw["stages"][0], {**raw["stages"][1], "train": {}}]}
    with pytest.raises(TuneloopError, match=r"stages\[1\]\.train\.rewards: .*no reward function is configured"):
        preflight(validate_chain(bad))  # before anything trains

    run_chain(chain, "chain.yaml", evaluate=False, console_print=lambda *a: None)
    sft, rl = (stage.run for stage in chain.stages)
    assert (sft.root / "merged" / "config.json").is_file()
    assert chain.stages[1].config.model.name == str(sft.root / "merged")
    assert read_json(rl.root / "train_summary.json")["recipe"] == "grpo"
    assert (rl.adapter / "adapter_config.json").is_file()
    assert read_json(Path(raw["output_dir"]) / "chain.json")["stages"][1]["recipe"] == "grpo"


def test_the_fast_path_samples_and_trains_as_trls_padded_path(grpo_config, tmp_path, monkeypatch):
    """train.packing (the default) and TRL's own GRPOTrainer, same seed: the same replies reach the rewards and
    every logged step's loss, reward and KL agree (to float rounding)."""
    import tuneloop.recipes.grpo as grpo_recipe
    from tuneloop.stages import data_stage, open_for_run, train_stage

    packed_passes = []

    def counted(*args, **kwargs):
        result = grpo_recipe.group_token_log_probs.__wrapped__(*args, **kwargs)
        packed_passes.append(result is not None)
        return result

    counted.__wrapped__ = grpo_recipe.group_token_log_probs
    monkeypatch.setattr(grpo_recipe, "group_token_log_probs", counted)

    grpo_config["train"].update(max_steps=3, batch_size=6)
    grpo_config["train"]["grpo"].update(num_generations=3, temperature=0.9)
    logs, calls = {}, {}
    for packing in (True, False):
        grpo_config["output_dir"] = str(tmp_path / f"run-{packing}")
        grpo_config["train"]["packing"] = packing
        config = validate_config(grpo_config)
        run = open_for_run(config)
        data_stage(config, run, console_print=lambda *_: None)
        lines = []
        train_stage(config, run, console_print=lines.append)
        assert any(("prompt-shared sampling" if packing else "TRL's padded path") in line for line in lines)
        logs[packing] = [r for r in read_jsonl(run.train_log) if "loss" in r]
        recorded = tmp_path / "my_rewards.py.calls.jsonl"
        calls[packing] = read_jsonl(recorded)
        recorded.unlink()
    assert [c["completions"] for c in calls[True]] == [c["completions"] for c in calls[False]]
    assert len(logs[True]) == len(logs[False]) == 3
    for fast, padded in zip(logs[True], logs[False], strict=True):
        for key in ("loss", "reward", "kl", "entropy"):
            assert fast[key] == pytest.approx(padded[key], rel=1e-3, abs=1e-5), key
    assert any(r["kl"] > 0 for r in logs[True])  # the policy moved: the comparison is not of two untrained models
    # Each step ran the reference and the policy on packed groups (the padded run never calls them).
    assert len(packed_passes) == 6 and all(packed_passes)
