"""Preference splits as the TRL trainers read them: conversational prompt/chosen/rejected (or completion/label) rows.

Shared by recipes/dpo.py, recipes/kto.py and recipes/reward.py. Long conversations lose their earliest
turns until the prompt fits in train.preference.max_prompt_share of data.max_length: TRL truncates from
the end ("keep_start"), which would otherwise cut the replies, the very thing being compared.
"""

from __future__ import annotations

from tuneloop.config.schema import RunConfig
from tuneloop.data.preference_rows import unpair
from tuneloop.errors import TuneloopError
from tuneloop.workspace import RunDir, read_jsonl


def prompt_token_count(tokenizer, prompt: list[dict]) -> int:
    return len(tokenizer.apply_chat_template(prompt, tokenize=True, add_generation_prompt=True, return_dict=False))


def fitted_prompt(tokenizer, prompt: list[dict], max_tokens: int) -> list[dict]:
    """The prompt with its earliest exchanges dropped (a system turn kept) until it renders in max_tokens."""
    system = prompt[:1] if prompt and prompt[0]["role"] == "system" else []
    turns = prompt[len(system):]
    while len(turns) > 2 and prompt_token_count(tokenizer, system + turns) > max_tokens:
        turns = turns[2:]  # one user turn and the assistant's answer, so the prompt still starts with the user
    return system + turns


def preference_rows(config: RunConfig, run: RunDir, split: str, tokenizer, console_print=print) -> list[dict]:
    """A split's pairs as TRL's conversational rows: prompt messages, chosen and rejected as one assistant turn."""
    limit = int(config.data.max_length * config.train.preference.max_prompt_share)
    rows, shortened = [], 0
    for example in read_jsonl(run.split(split)):
        if "chosen" not in example:
            raise TuneloopError(f"data: the {split} split holds no preference pairs (prompt, chosen, rejected).")
        prompt = fitted_prompt(tokenizer, example["prompt"], limit)
        shortened += len(prompt) < len(example["prompt"])
        rows.append({"prompt": prompt, "chosen": [{"role": "assistant", "content": example["chosen"]}],
                     "rejected": [{"role": "assistant", "content": example["rejected"]}]})
    if shortened:
        console_print(f"data: {split}: {shortened} of {len(rows)} conversation(s) lost their earliest turns to fit "
                      f"{limit} prompt tokens (train.preference.max_prompt_share of data.max_length)")
    return rows


def unpaired_rows(config: RunConfig, run: RunDir, split: str, tokenizer, console_print=print) -> list[dict]:
    """A split as TRL's unpaired rows (prompt, completion, label); pairs are split into a good and a bad row."""
    examples = read_jsonl(run.split(split))
    if examples and "chosen" in examples[0]:
        examples = unpair(examples)
    limit = int(config.data.max_length * config.train.preference.max_prompt_share)
    return [{"prompt": fitted_prompt(tokenizer, ex["prompt"], limit),
             "completion": [{"role": "assistant", "content": ex["completion"]}], "label": bool(ex["desirable"])}
            for ex in examples]
