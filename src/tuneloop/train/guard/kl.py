"""KL to the base (train.guard.kl_to_base): loss = cross-entropy + weight * per-token KL(tuned || base).

The KL is taken on the training batch's target tokens (the ones the cross-entropy scores):

    KL_t = sum_v p_tuned(v | x_<t) * (log p_tuned(v | x_<t) - log p_base(v | x_<t))

summed over target tokens and divided like the cross-entropy (by the batch's target count, or
num_items_in_batch under gradient accumulation); the validation loss stays the plain cross-entropy.
The base distribution comes from the same model with the adapter switched off (PEFT's disable_adapter:
no second copy) or, for full fine-tuning, a frozen copy of the base. The term needs the full logits of
both models, so a run with it skips the chunked loss (tuneloop.train.chunked_loss) and is slower:
docs/forgetting.md gives the cost.
"""

from __future__ import annotations

import contextlib
import functools

IGNORE_INDEX = -100


def token_kl(tuned_logits, base_logits):
    """Per-row KL(tuned || base) of two [N, V] logit matrices, in fp32."""
    import torch.nn.functional as F

    tuned_log = F.log_softmax(tuned_logits.float(), dim=-1)
    base_log = F.log_softmax(base_logits.float(), dim=-1)
    return (tuned_log.exp() * (tuned_log - base_log)).sum(dim=-1)


def shifted_targets(inputs: dict):
    """Next-token targets of a batch (labels shifted by one); a packed row's sequence starts predict nothing."""
    targets = inputs["labels"][:, 1:]
    position_ids = inputs.get("position_ids")
    if position_ids is not None:
        targets = targets.masked_fill(position_ids[:, 1:] == 0, IGNORE_INDEX)
    return targets


def base_reference(model, frozen_base=None):
    """A function returning the base model's logits for a batch: adapter off, or the frozen copy."""
    import torch

    def logits(batch: dict):
        with torch.no_grad():
            if frozen_base is not None:
                return frozen_base(**batch).logits
            context = model.disable_adapter() if hasattr(model, "disable_adapter") else contextlib.nullcontext()
            with context:
                return model(**batch).logits
    return logits


def kl_regularized_loss(model, inputs: dict, weight: float, reference, num_items_in_batch=None):
    """(loss, cross-entropy sum, KL sum, target count) for one batch; reference(batch) gives the base logits."""
    import torch
    import torch.nn.functional as F

    batch = {key: value for key, value in inputs.items() if key != "labels"}
    targets = shifted_targets(inputs)
    keep = targets != IGNORE_INDEX
    logits = model(**batch).logits[:, :-1]
    tuned = logits[keep]
    cross_entropy = F.cross_entropy(tuned.float(), targets[keep], reduction="sum")
    if weight:
        kl = token_kl(tuned, reference(batch)[:, :-1][keep]).sum()
    else:  # evaluation: the plain cross-entropy, comparable with runs without the term, and no base forward
        kl = torch.zeros((), device=cross_entropy.device)
    count = keep.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
    loss = (cross_entropy + weight * kl) / torch.as_tensor(count, device=cross_entropy.device)
    if not keep.any():  # keep the graph connected on a batch with nothing to learn
        loss = loss + logits.sum() * 0.0
    return loss, cross_entropy.detach(), kl.detach(), int(keep.sum())


@functools.cache
def kl_trainer(base_class):
    """A subclass of `base_class` (SFTTrainer, Trainer) whose loss adds the KL term; set .guard_kl_weight and
    .guard_reference after building it. Its .guard_kl_record() gives the mean training KL per target token."""

    class KlToBaseTrainer(base_class):
        guard_kl_weight = 0.0
        guard_reference = None
        guard_kl_sum = 0.0
        guard_kl_tokens = 0

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            reference = self.guard_reference or base_reference(self.accelerator.unwrap_model(model))
            # Validation loss stays the plain cross-entropy (comparable across runs, and early stopping on it).
            weight = self.guard_kl_weight if model.training else 0.0
            loss, _, kl, tokens = kl_regularized_loss(model, inputs, weight, reference, num_items_in_batch)
            if model.training:
                self.guard_kl_sum += float(kl)
                self.guard_kl_tokens += tokens
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes  # as Trainer.compute_loss: DDP averages gradients
            return (loss, {"loss": loss}) if return_outputs else loss

        def guard_kl_record(self) -> dict:
            mean = self.guard_kl_sum / self.guard_kl_tokens if self.guard_kl_tokens else None
            return {"weight": self.guard_kl_weight, "mean_train_kl_per_token": mean, "tokens": self.guard_kl_tokens}

    KlToBaseTrainer.__name__ = f"KlToBase{base_class.__name__}"
    return KlToBaseTrainer


def frozen_copy(base_path: str, dtype, device: str, attention: str | None = None):
    """The base model for full fine-tuning's KL term: loaded once, in eval mode, with no gradients.

    attention: the training model's attention implementation (packed rows need the same one)."""
    from tuneloop.models.load import load_causal_lm

    model = load_causal_lm(base_path, dtype, device, attention)
    model.eval()
    model.config.use_cache = False
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model
