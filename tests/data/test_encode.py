"""Chat rendering and label masking: the loss sees the assistant replies (and their end marker) only."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from tuneloop.data.encode import IGNORE_INDEX, EncodeStats, encode_example, encode_examples
from tuneloop.data.templates import PLAIN, apply_template_choice
from tuneloop.errors import ConfigError


@pytest.fixture()
def tokenizer(tiny_model_dir):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _learned_text(tokenizer, encoded) -> str:
    kept = [tok for tok, label in zip(encoded["input_ids"], encoded["labels"], strict=True) if label != IGNORE_INDEX]
    return tokenizer.decode(kept)


def test_only_the_assistant_reply_and_its_end_marker_carry_labels(tokenizer):
    example = {"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Where is the head office?"},
        {"role": "assistant", "content": "In Bergen."},
    ]}
    encoded = encode_example(tokenizer, example, 128, train_on_prompt=False, stats=EncodeStats())
    assert _learned_text(tokenizer, encoded) == "In Bergen.<|im_end|>\n"
    assert encoded["labels"][0] == IGNORE_INDEX


def test_every_assistant_turn_of_a_multi_turn_chat_is_learned(tokenizer):
    example = {"messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Warranty?"},
        {"role": "assistant", "content": "7 years."},
    ]}
    encoded = encode_example(tokenizer, example, 128, train_on_prompt=False, stats=EncodeStats())
    assert _learned_text(tokenizer, encoded) == "Hello.<|im_end|>\n7 years.<|im_end|>\n"


def test_train_on_prompt_learns_every_token(tokenizer):
    example = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    encoded = encode_example(tokenizer, example, 128, train_on_prompt=True, stats=EncodeStats())
    assert encoded["labels"] == encoded["input_ids"]


def test_truncation_is_counted_and_rows_without_targets_are_dropped(tokenizer):
    long_prompt = {"messages": [
        {"role": "user", "content": "word " * 100},
        {"role": "assistant", "content": "Reply."},
    ]}
    short = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}]}
    fits = len(encode_example(tokenizer, short, 512, False, EncodeStats())["input_ids"])
    rows, stats = encode_examples(tokenizer, [long_prompt, short], max_length=fits, train_on_prompt=False)
    assert len(rows) == 1
    assert stats.truncated == 1 and stats.dropped_no_target == 1 and stats.examples == 2
    assert len(rows[0]["input_ids"]) == fits


def test_plain_text_examples_learn_all_tokens_and_end_with_eos(tokenizer):
    encoded = encode_example(tokenizer, {"text": "Bergen is rainy."}, 64, False, EncodeStats())
    assert encoded["input_ids"][-1] == tokenizer.eos_token_id
    assert encoded["labels"] == encoded["input_ids"]


def test_plain_fallback_template_marks_the_reply_for_base_models(tokenizer):
    tokenizer.chat_template = None
    with pytest.raises(ConfigError, match="no chat template"):
        apply_template_choice(tokenizer, "model", "tiny")
    apply_template_choice(tokenizer, "plain", "tiny")
    assert tokenizer.chat_template == PLAIN
    example = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]}
    encoded = encode_example(tokenizer, example, 64, False, EncodeStats())
    assert _learned_text(tokenizer, encoded).startswith("Hello.<|im_end|>")


def test_unknown_template_choice_is_a_config_error(tokenizer):
    with pytest.raises(ConfigError, match="data.chat_template"):
        apply_template_choice(tokenizer, "vicuna", "tiny")
