"""Continuous batching for causal LMs: rows join and leave a running batch between decoding steps.

A batch is a KV cache (transformers' DynamicCache) plus a left-padded attention mask. New requests are
prefilled as their own small batch and merged in (both caches left-padded to one length); finished rows are
dropped at once and all-padding columns trimmed, so a long reply never holds short ones back. Each row has its
own sampling settings (temperature, top_p, seed), stop sequences, token limit and, on a PEFT model, its own
LoRA adapter (PEFT's per-row `adapter_names`), so requests for different adapters share one forward pass.

Caches whose layers are not plain full-attention DynamicLayers (sliding windows, linear attention) are not
merged: such a model runs one batch at a time and new rows wait until it ends (see `can_merge`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tuneloop.serve.engine import Finished, GenerationRequest, TextDelta

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in adapter_names


@dataclass
class Row:
    """One request being answered: its settings, the tokens so far, and where its text goes."""

    request: GenerationRequest
    tokenizer: object
    stop_ids: set[int]
    emit: Callable[[TextDelta | Finished], None]
    adapter: str = BASE_ADAPTER
    generated: list[int] = field(default_factory=list)
    emitted: int = 0  # characters of the reply already sent
    cancelled: bool = False  # the client went away
    done: bool = False
    pending: int | None = None  # the last sampled token, fed to the model in the next step
    generator: torch.Generator | None = None

    def seed_generator(self, device: torch.device) -> None:
        if self.request.temperature > 0:
            self.generator = torch.Generator(device=device)
            if self.request.seed is not None:
                self.generator.manual_seed(self.request.seed)
            else:
                self.generator.seed()

    def accept(self, token: int, context_left: int) -> None:
        """Take one sampled token: emit the new text, or finish on EOS, a stop sequence or a limit."""
        if token in self.stop_ids:
            self._finish("stop", self._text())
            return
        self.generated.append(token)
        text = self._text()
        for stop in self.request.stop:
            at = text.find(stop, max(0, self.emitted - len(stop)))
            if at >= 0:
                self._finish("stop", text[:at])
                return
        if len(self.generated) >= self.request.max_tokens or context_left <= 0:
            self._finish("length", text)
            return
        self.pending = token
        safe = len(text) - _held_back(text, self.request.stop)
        if safe > self.emitted:
            self.emit(TextDelta(text[self.emitted : safe]))
            self.emitted = safe

    def _text(self) -> str:
        return self.tokenizer.decode(self.generated, skip_special_tokens=True)

    def _finish(self, reason: str, text: str) -> None:
        if len(text) > self.emitted:
            self.emit(TextDelta(text[self.emitted :]))
        self.emit(Finished(reason, len(self.request.prompt_ids), len(self.generated), text))
        self.done = True


def _held_back(text: str, stops: list[str]) -> int:
    """How many trailing characters to keep unsent: a half-decoded character, or the start of a stop sequence."""
    if text.endswith("\ufffd"):  # a multi-byte character split across tokens
        return 1
    held = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:size]):
                held = max(held, size)
                break
    return held


@dataclass
class Batch:
    rows: list[Row]
    cache: object  # transformers DynamicCache
    mask: torch.Tensor  # (rows, columns) 1 for real tokens, 0 for left padding
    positions: torch.Tensor  # (rows,) the position id of each row's next token


def can_merge(cache) -> bool:
    from transformers.cache_utils import DynamicLayer

    return all(type(layer) is DynamicLayer for layer in getattr(cache, "layers", [None]))


def _forward(model, input_ids, mask, positions, cache, rows: list[Row], peft: bool):
    extra = {"adapter_names": [row.adapter for row in rows]} if peft else {}
    output = model(input_ids=input_ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                   use_cache=True, logits_to_keep=1, **extra)
    return output.logits[:, -1, :].float(), output.past_key_values


@torch.inference_mode()
def prefill(model, rows: list[Row], pad_id: int, device: str, peft: bool) -> tuple[Batch, torch.Tensor]:
    """Run the prompts of new rows (left-padded) and sample each one's first token."""
    from transformers import DynamicCache

    width = max(len(row.request.prompt_ids) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        prompt = row.request.prompt_ids
        ids[index, width - len(prompt) :] = torch.tensor(prompt)
        mask[index, width - len(prompt) :] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits, cache = _forward(model, ids, mask, positions, DynamicCache(), rows, peft)
    for row in rows:
        row.seed_generator(ids.device)  # the logits' device, index included (cuda:0), as multinomial needs
    return Batch(rows, cache, mask, positions[:, -1] + 1), logits


@torch.inference_mode()
def step(model, batch: Batch, peft: bool) -> torch.Tensor:
    """Feed every row's pending token; the logits of the next one."""
    ids = torch.tensor([[row.pending] for row in batch.rows], device=batch.mask.device)
    batch.mask = torch.cat([batch.mask, batch.mask.new_ones((len(batch.rows), 1))], dim=1)
    logits, batch.cache = _forward(model, ids, batch.mask, batch.positions[:, None], batch.cache, batch.rows, peft)
    batch.positions = batch.positions + 1
    return logits


def sample(logits: torch.Tensor, rows: list[Row]) -> list[int]:
    """Greedy for temperature 0, else temperature and nucleus (top_p) sampling with each row's own generator."""
    tokens = logits.argmax(dim=-1).tolist()
    for index, row in enumerate(rows):
        settings = row.request
        if settings.temperature <= 0:
            continue
        scores = logits[index] / settings.temperature
        if settings.top_p < 1.0:
            ordered, order = scores.sort(descending=True)
            cumulative = ordered.softmax(-1).cumsum(-1)
            drop = cumulative - ordered.softmax(-1) > settings.top_p  # keep the smallest set reaching top_p
            scores = scores.clone()
            scores[order[drop]] = float("-inf")
        probabilities = scores.softmax(-1)
        tokens[index] = int(torch.multinomial(probabilities, 1, generator=row.generator))
    return tokens


def keep_rows(batch: Batch, keep: list[int]) -> None:
    """Drop the other rows from the batch and trim the padding columns no remaining row needs."""
    if len(keep) != len(batch.rows):
        index = torch.tensor(keep, dtype=torch.long, device=batch.mask.device)
        batch.cache.batch_select_indices(index)
        batch.mask = batch.mask[index]
        batch.positions = batch.positions[index]
        batch.rows = [batch.rows[i] for i in keep]
    if not keep:
        return
    used = batch.mask.any(dim=0).nonzero()
    start = int(used[0]) if len(used) else 0
    if start > 0:
        batch.mask = batch.mask[:, start:]
        for layer in batch.cache.layers:
            layer.keys, layer.values = layer.keys[:, :, start:], layer.values[:, :, start:]


def merge(running: Batch, joining: Batch) -> Batch:
    """One batch of both: caches and masks left-padded to the same length, then stacked."""
    width = max(running.mask.shape[1], joining.mask.shape[1])

    def pad(tensor: torch.Tensor, dim: int) -> torch.Tensor:
        missing = width - tensor.shape[dim]
        if missing == 0:
            return tensor
        shape = list(tensor.shape)
        shape[dim] = missing
        return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)

    for mine, theirs in zip(running.cache.layers, joining.cache.layers, strict=True):
        mine.keys = torch.cat([pad(mine.keys, 2), pad(theirs.keys, 2)], dim=0)
        mine.values = torch.cat([pad(mine.values, 2), pad(theirs.values, 2)], dim=0)
    running.mask = torch.cat([pad(running.mask, 1), pad(joining.mask, 1)], dim=0)
    running.positions = torch.cat([running.positions, joining.positions])
    running.rows = running.rows + joining.rows
    return running
