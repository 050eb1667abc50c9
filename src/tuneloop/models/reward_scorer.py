"""Reward models as scorers: load a reward run's model by its run directory and score replies with it.

A reward run (train.recipe: reward, recipes/reward.py) saves RUN/model/: an AutoModelForSequenceClassification
with num_labels=1 (any LoRA adapter merged in) and its tokenizer with the chat template used in training.
The score of a reply is the single logit of the chat-templated conversation, prompt then reply.

    scorer = load_reward_scorer("runs/hh-reward")         # or "runs/hh-reward/model"
    scorer.score([[{"role": "user", "content": "Hi"}]], ["Hello! How can I help?"])   # -> [1.73]

GRPO's reward_model reward, the safety gate and the reward run's own evaluation use it.
"""

from __future__ import annotations

import json
from pathlib import Path

from tuneloop.errors import TuneloopError


def reward_model_dir(path: str | Path) -> Path:
    """The model directory of a reward run (RUN/model) or the directory itself; a clear error otherwise."""
    path = Path(path)
    candidates = [path / "model", path]
    for candidate in candidates:
        config_file = candidate / "config.json"
        if not config_file.is_file():
            continue
        config = json.loads(config_file.read_text(encoding="utf-8"))
        architectures = config.get("architectures") or []
        labels = config.get("num_labels", len(config.get("id2label") or {}) or None)
        if any(name.endswith("ForSequenceClassification") for name in architectures) and labels == 1:
            return candidate
    raise TuneloopError(
        f"{path}: not a reward run (no model/ with a one-output sequence-classification model). Train one with "
        "train.recipe: reward on preference pairs and pass its run directory (or its model/ folder)."
    )


class RewardScorer:
    """A loaded reward model; score() gives one float per (prompt, reply), in batches."""

    def __init__(self, model, tokenizer, device: str, max_length: int, batch_size: int):
        self.model, self.tokenizer, self.device = model, tokenizer, device
        self.max_length, self.batch_size = max_length, batch_size

    def token_ids(self, prompt: list[dict], reply: str) -> list[int]:
        ids = self.tokenizer.apply_chat_template(prompt + [{"role": "assistant", "content": reply}], tokenize=True,
                                                 return_dict=False)
        if len(ids) > self.max_length:  # keep the first token (an encoder's [CLS]) and the end, where the reply is
            ids = ids[:1] + ids[len(ids) - self.max_length + 1:]
        return ids

    def score(self, prompts: list[list[dict]], replies: list[str]) -> list[float]:
        import torch

        from tuneloop.data.batching import padded_batch

        if len(prompts) != len(replies):
            raise ValueError(f"{len(prompts)} prompts but {len(replies)} replies; they pair up by position")
        encoded = [self.token_ids(p, r) for p, r in zip(prompts, replies, strict=True)]
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        scores = [0.0] * len(encoded)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        with torch.no_grad():
            for begin in range(0, len(order), self.batch_size):
                batch = order[begin:begin + self.batch_size]
                padded = padded_batch([encoded[i] for i in batch], pad)
                logits = self.model(input_ids=padded["input_ids"].to(self.device),
                                    attention_mask=padded["attention_mask"].to(self.device)).logits
                for row, index in enumerate(batch):
                    scores[index] = float(logits[row, 0])
        return scores


def load_reward_scorer(run_dir_or_model_dir: str | Path, device: str = "cpu", max_length: int = 1024,
                       batch_size: int = 8) -> RewardScorer:
    """The reward model of a reward run (its run directory or model/ folder), ready to score replies."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from tuneloop.models.load import load_tokenizer, quiet_transformers

    directory = reward_model_dir(run_dir_or_model_dir)
    quiet_transformers()
    tokenizer = load_tokenizer(str(directory))
    if not getattr(tokenizer, "chat_template", None):
        raise TuneloopError(f"{directory}: the reward model's tokenizer has no chat template; retrain it with "
                            "tuneloop (the reward recipe saves the template it trained with).")
    model = AutoModelForSequenceClassification.from_pretrained(str(directory), dtype=torch.float32).to(device)
    model.config.pad_token_id = tokenizer.pad_token_id
    model.eval()
    limit = min(max_length, getattr(model.config, "max_position_embeddings", max_length) or max_length)
    return RewardScorer(model, tokenizer, device, limit, batch_size)
