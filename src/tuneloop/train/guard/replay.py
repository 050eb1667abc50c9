"""Replay (train.guard.replay): general examples mixed into the training rows at a stated share of examples.

Sources: `files` (rows in any format tuneloop reads) and `self: N`, the base model's own greedy replies
to the first N prompts of tuneloop.data.general_prompts, generated once per model and cached under
$TUNELOOP_HOME/self_replay/ (a copy lands in the run's guard/ folder). The replay sample is drawn once
with the run's seed and joins the training rows for every epoch: with ratio r and T task rows it holds
round(T * r / (1 - r)) rows, so replay is a share r of each epoch (sampled with repeats only when the
sources hold fewer rows, which the console line says).
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

from tuneloop.data.general_prompts import PROMPT_SET_VERSION, general_prompts
from tuneloop.data.prepare import load_examples
from tuneloop.data.text_fields import example_text
from tuneloop.errors import DataError
from tuneloop.workspace import read_jsonl, write_jsonl


def replay_count(task_rows: int, ratio: float) -> int:
    """Replay rows that make a share `ratio` of task_rows + replay rows."""
    return max(1, round(task_rows * ratio / (1.0 - ratio)))


def mix_replay(task_rows: list[dict], pool: list[dict], ratio: float, seed: int) -> tuple[list[dict], dict]:
    """Task rows plus a seeded replay sample from `pool` (shuffled together), and counts for the record."""
    if not pool:
        raise DataError("train.guard.replay: the replay sources hold no usable rows.")
    wanted = replay_count(len(task_rows), ratio)
    rng = random.Random(seed)
    sample: list[dict] = []
    while len(sample) < wanted:  # each pass uses every pool row once before any repeats
        sample += rng.sample(pool, min(len(pool), wanted - len(sample)))
    mixed = task_rows + sample
    rng.shuffle(mixed)
    counts = {"task_rows": len(task_rows), "replay_rows": len(sample), "pool_rows": len(pool),
              "ratio": ratio, "repeated": len(sample) > len(pool)}
    return mixed, counts


def file_rows(paths: list[str], kind: str) -> list[dict]:
    """Rows of the replay files in the shape the recipe trains on: chat rows for SFT, {"text"} for pretraining."""
    rows: list[dict] = []
    for index, path in enumerate(paths):
        if not Path(path).is_file():
            raise DataError(f"train.guard.replay.files[{index}]: {path}: no such file (relative paths start at the "
                            "current directory).")
        examples = load_examples(path, "auto", skip_invalid=True).examples
        if kind == "text":
            rows += [{"text": example_text(ex)} for ex in examples]
            continue
        chats = [{"messages": ex["messages"]} for ex in examples if "messages" in ex]
        if not chats:
            raise DataError(f"train.guard.replay.files[{index}]: {path}: no row is a conversation or instruction "
                            "(chat, alpaca, prompt_completion); SFT replays replies. Plain text replays in continued "
                            "pretraining.")
        rows += chats
    return rows


def self_replay_rows(count: int, base_path: str, tokenizer, max_new_tokens: int, kind: str, device: str, dtype,
                     batch_size: int = 16, console_print=print, copy_to: Path | None = None) -> list[dict]:
    """The base model's greedy replies to `count` built-in general prompts, from the cache when present."""
    from tuneloop.workspace import cache_root

    prompts = general_prompts(count)
    if len(prompts) < count:
        console_print(f"replay: the built-in prompt set has {len(prompts)} prompts; using all of them "
                      f"(train.guard.replay.self={count})")
    key = self_replay_key(base_path, tokenizer, len(prompts), max_new_tokens)
    cache = cache_root() / "self_replay" / f"{key}.jsonl"
    if cache.is_file():
        pairs = read_jsonl(cache)
        console_print(f"replay: {len(pairs)} self-generated replies from the cache ({cache})")
    else:
        replies = base_replies(base_path, tokenizer, prompts, max_new_tokens, device, dtype, batch_size,
                               desc="replay: base replies")
        pairs = [{"prompt": p, "reply": r} for p, r in zip(prompts, replies, strict=True) if r.strip()]
        cache.parent.mkdir(parents=True, exist_ok=True)
        write_jsonl(cache, pairs)
    if copy_to is not None:
        write_jsonl(copy_to, pairs)
    if kind == "text":
        return [{"text": f"{pair['prompt']}\n{pair['reply']}"} for pair in pairs]
    return [{"messages": [{"role": "user", "content": pair["prompt"]},
                          {"role": "assistant", "content": pair["reply"]}]} for pair in pairs]


def self_replay_key(base_path: str, tokenizer, count: int, max_new_tokens: int) -> str:
    """Cache key: the model (its path and config), the chat template, the prompt set and the generation settings."""
    config = Path(base_path) / "config.json"
    parts = [str(Path(base_path).resolve()), config.read_text(encoding="utf-8") if config.is_file() else "",
             str(getattr(tokenizer, "chat_template", "")), str(PROMPT_SET_VERSION), str(count), str(max_new_tokens)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:20]


def base_replies(base_path: str, tokenizer, prompts: list[str], max_new_tokens: int, device: str, dtype,
                 batch_size: int, desc: str, conversations: list[list[dict]] | None = None) -> list[str]:
    """Greedy replies of the untrained base model to single-turn prompts (or to whole conversations)."""
    import gc

    from tuneloop.data.encode import render_prompt
    from tuneloop.models.generate import generate_replies
    from tuneloop.models.load import load_generator

    conversations = conversations or [[{"role": "user", "content": p}, {"role": "assistant", "content": ""}]
                                      for p in prompts]
    rendered = [render_prompt(tokenizer, messages) for messages in conversations]
    model = load_generator(base_path, dtype, device)
    model.eval()
    try:
        return generate_replies(model, tokenizer, rendered, max_new_tokens, batch_size, desc=desc)
    finally:
        del model
        gc.collect()
