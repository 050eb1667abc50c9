"""Reward functions for GRPO: built-ins score constructed replies right; bad specs name their key; a reward model."""

from __future__ import annotations

import pytest

from tuneloop.config.load import validate_config
from tuneloop.config.schema import RewardSpec
from tuneloop.errors import ConfigError
from tuneloop.train.rewards import (
    RewardFunctionError,
    answer_match,
    format_regex,
    json_keys,
    last_number,
    length_penalty,
    resolve_rewards,
)


def chat(*replies: str) -> list[list[dict]]:
    return [[{"role": "assistant", "content": reply}] for reply in replies]


def specs(*entries) -> list[RewardSpec]:
    return [RewardSpec.model_validate(entry) for entry in entries]


def test_answer_match_reads_the_last_number_and_compares_numerically():
    replies = chat("5 + 7 = 12. Answer: 12", "Answer: 12.0", "12 apples, then 3 more: 15", "I think 1,200.",
                   "no number here", "Answer: -4")
    assert answer_match(replies, answer=["12", "12", "12", "1200", "12", "-4"]) == [1.0, 1.0, 0.0, 1.0, 0.0, 1.0]
    assert answer_match(["The capital is Paris."], column="city", city=["paris"]) == [1.0]  # text: contains
    assert answer_match(chat("7"), answer=[7]) == [1.0]  # a JSON number in the data works as well as text
    assert last_number("from 3 to 4.5 km") == 4.5 and last_number("none") is None
    strict = r"Answer: *(-?\d+)\.?\s*$"  # a strict format: the reply must end with "Answer: N"
    assert answer_match(chat("7 + 5 = 12. Answer: 12.", "Answer: 12, I think", "12", "Answer: 13"), pattern=strict,
                        answer=["12"] * 4) == [1.0, 0.0, 0.0, 0.0]


def test_format_json_and_length_built_ins():
    assert format_regex(chat("so Answer: 3", "Answer: 3 apples", "answer 3"), pattern=r"Answer: \d+$") == [1.0, 0.0,
                                                                                                             0.0]
    replies = chat('{"name": "Ada", "age": 3}', '```json\n{"name": "Ada"}\n```', "[1, 2]", "name: Ada")
    assert json_keys(replies, keys=["name", "age"]) == [1.0, 0.5, 0.0, 0.0]
    assert length_penalty(chat("one two three", " ".join(["w"] * 15), " ".join(["w"] * 40)), max_words=10) == [
        0.0, -0.5, -1.0]


def test_resolve_names_every_bad_entry_by_its_key(tmp_path):
    (tmp_path / "mine.py").write_text("def good(completions, **kw):\n    return [1.0] * len(completions)\n"
                                      "def no_replies(prompts):\n    return []\nTHRESHOLD = 3\n", encoding="utf-8")
    mine = tmp_path / "mine.py"
    with pytest.raises(ConfigError) as raised:
        resolve_rewards(specs(f"{mine}:good", "answer_mach", "no_such_module_xyz:f", f"{mine}:missing",
                              f"{mine}:THRESHOLD", f"{mine}:no_replies", {"function": "format_regex"},
                              {"function": "format_regex", "pattern": "(unclosed"},
                              {"function": "answer_match", "keys": ["a"]}, f"{tmp_path}/nope.py:f"))
    message = str(raised.value)
    assert "train.rewards: 9 problem(s)" in message
    assert "train.rewards[1]: 'answer_mach' is not a built-in" in message and "Did you mean 'answer_match'" in message
    assert "train.rewards[2]: no module named 'no_such_module_xyz'" in message
    assert "train.rewards[3]:" in message and "has no function 'missing' (it defines: good, no_replies)" in message
    assert "train.rewards[4]:" in message and "is a int, not a function" in message
    assert "train.rewards[5]:" in message and "takes no 'completions' argument" in message
    assert "train.rewards[6]: format_regex needs pattern" in message
    assert "train.rewards[7].pattern: not a valid regular expression" in message
    assert "train.rewards[8]: answer_match takes no option keys" in message
    assert "train.rewards[9]:" in message and "nope.py: no such file" in message
    assert "train.rewards[0]" not in message


def test_a_module_beside_the_config_imports_by_name_and_gets_only_what_it_asks_for(tmp_path, monkeypatch):
    (tmp_path / "scorers_for_test.py").write_text(
        "def shorter(completions, answer):\n    return [1.0 / (1 + len(c[0]['content'])) for c in completions]\n",
        encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    (reward,) = resolve_rewards(specs("scorers_for_test:shorter"))
    assert reward.name == "shorter" and reward.__name__ == "shorter"  # TRL logs rewards/shorter/mean
    values = reward(prompts=[[]] * 2, completions=chat("a", "abc"), completion_ids=[[1], [1]], answer=["1", "2"],
                    trainer_state=None, log_extra=None)  # no **kwargs: the extras are not passed
    assert values == [0.5, 0.25]
    reward.check_columns(["answer"])
    with pytest.raises(ConfigError, match=r"train\.rewards\[0\] \(shorter\): needs argument\(s\) \['answer'\]"):
        reward.check_columns(["solution"])


def test_answer_match_without_its_column_in_the_data_is_a_config_error():
    (reward,) = resolve_rewards(specs({"function": "answer_match", "column": "solution"}))
    with pytest.raises(ConfigError, match=r"train\.rewards\[0\] \(answer_match\): the data has no column 'solution'"):
        reward.check_columns(["answer"])


def test_bad_return_values_are_reward_function_errors():
    (reward,) = resolve_rewards(specs("length_penalty"))
    reward.function = lambda completions, **kw: ["high"] * len(completions)
    with pytest.raises(RewardFunctionError, match=r"returned 'high' for reply 0; each value must be a number or None"):
        reward(prompts=[[]], completions=chat("x"), completion_ids=[[1]])


def test_rewards_config_accepts_strings_and_mappings_and_rejects_unknown_options(tmp_path):
    raw = {"data": {"train_file": "x.jsonl"},
           "train": {"rewards": ["answer_match", {"function": "length_penalty", "max_words": 20, "weight": -1}]}}
    config = validate_config(raw)
    assert [r.function for r in config.train.rewards] == ["answer_match", "length_penalty"]
    raw["train"]["rewards"][1]["max_word"] = 3
    with pytest.raises(ConfigError, match=r"train\.rewards\.1\.max_word: unknown key"):
        validate_config(raw)


def test_a_reward_model_run_directory_scores_replies_with_its_logit(tmp_path, tiny_model_dir):
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model_dir = tmp_path / "reward_run" / "model"
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, num_labels=1,
                         pad_token_id=tokenizer.pad_token_id)
    LlamaForSequenceClassification(config).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)

    (reward,) = resolve_rewards(specs(str(tmp_path / "reward_run")))
    assert reward.name == "reward_model_reward_run"
    prompts = [[{"role": "user", "content": "When do the stores open?"}]] * 3
    scores = reward(prompts=prompts, completions=chat("At 7:30.", "At 7:30.", "Never, sorry."),
                    completion_ids=[[1]] * 3, answer=["x"] * 3)
    assert len(scores) == 3 and scores[0] == pytest.approx(scores[1]) and scores[0] != pytest.approx(scores[2])

    reference = LlamaForSequenceClassification.from_pretrained(model_dir).eval()
    text = tokenizer.apply_chat_template([*prompts[2], {"role": "assistant", "content": "Never, sorry."}],
                                         tokenize=False)
    with torch.inference_mode():
        expected = reference(**tokenizer(text, return_tensors="pt", add_special_tokens=False)).logits[0, 0].item()
    assert scores[2] == pytest.approx(expected, abs=1e-5)

    with pytest.raises(ConfigError, match=r"train\.rewards\[0\]: .* holds no reward model"):
        resolve_rewards(specs(str(tmp_path)))
