"""KTO recipe: tune a causal LM on thumbs-up/down rows (one completion each, good or bad) with TRL's KTOTrainer.

This is what a feedback log gives: no pairs, just replies people liked or did not. Reads data/{train,
validation}.jsonl (canonical unpaired rows; preference pairs are split into one desirable and one
undesirable row) and writes adapter/ (LoRA) or model/ (full), as recipes/dpo.py.

Settings: train.preference.loss (kto, or apo_zero_unpaired), beta, desirable_weight and undesirable_weight
(KTO's paper weighs the rarer side up so that weight * count is about equal on both sides). The reference
is the adapter switched off with LoRA (TRL wraps the model from a peft_config; no second copy), a frozen copy
of the adapter training starts from when continuing one (model.adapter: the served run, in a retrain), a second
copy with full fine-tuning unless train.preference.precompute_ref_log_probs.

The KL estimate of the kto loss pairs each row with its neighbour in a fixed-order batch, so TRL reads the
rows in order: they are shuffled here once, with the run's seed (a pair split in two would otherwise sit
side by side in every batch).

The fast path (train.packing, on by default; docs/performance.md), as DPO's: a subclass of KTOTrainer whose
batches are one padding-free row holding each row's prompt once, then its completion and the mismatched KL
completion (each attending to the prompt and itself only); the LM head scores reply tokens only, and the
reference log-probs of both are computed once before training (adapter switched off) and cached, so no step
runs the reference. Prefix/prompt tuning takes TRL's padded path (one console line says so).

Raises:
    ConfigError: a loss KTO does not take, a batch size of 1 (the KL term needs neighbours).
    TrainingInterrupted: the run was stopped by a signal after saving a checkpoint.
"""

from __future__ import annotations

import functools
import random

from tuneloop.config.schema import RunConfig
from tuneloop.errors import ConfigError
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.load import load_causal_lm
from tuneloop.models.registry import resolve_model
from tuneloop.recipes.preference_data import unpaired_rows
from tuneloop.train.arguments import (
    common_training_arguments,
    drop_reference_adapter,
    reference_description,
    trainer_lora,
    uses_adapter,
)
from tuneloop.train.callbacks import replace_default_printing, trainer_callbacks
from tuneloop.train.fit import finish_training, fit, resume_point
from tuneloop.train.guard.freeze import freeze_lowest_blocks
from tuneloop.train.guard.switches import check_guard, interpolate_trained, reset_record
from tuneloop.train.lean_activations import recompute_cheap_activations
from tuneloop.train.model_setup import keep_adapter_inputs_in_compute_dtype, setup_tokenizer
from tuneloop.train.packed_attention import register_packed_attention
from tuneloop.train.packed_preference import (
    KL_SIDE,
    KTO_SIDES,
    PackedPairCollator,
    PackedTrainerSteps,
    install_reply_log_probs,
    kto_losses,
    sequence_log_probs,
)
from tuneloop.workspace import RunDir

KTO_LOSSES = ("kto", "apo_zero_unpaired")


def train_kto(config: RunConfig, run: RunDir, resume: bool = False, console_print=print, tracker=None) -> dict:
    """Train with KTO and save; return the summary also written to train_summary.json."""
    import datasets
    import torch
    from datasets import Dataset
    from transformers import set_seed
    from trl import KTOConfig, KTOTrainer

    preference = config.train.preference
    loss = preference.loss if preference.loss in KTO_LOSSES else None
    if loss is None and "loss" in preference.model_fields_set:
        raise ConfigError(f"train.preference.loss={preference.loss!r}: train.recipe kto takes "
                          f"{' or '.join(KTO_LOSSES)}.")
    loss = loss or "kto"
    if loss == "kto" and config.train.batch_size < 2:
        raise ConfigError("train.batch_size=1: KTO's KL term compares each row with another in its batch; "
                          "use 2 or more.")
    datasets.disable_progress_bars()
    set_seed(config.seed)
    device = pick_device(config.model.device)
    compute_dtype = pick_dtype(device, config.model.dtype)
    base_path = resolve_model(config.model.name, console_print)

    tokenizer = setup_tokenizer(config, base_path)
    splits = {}
    for split in ("train", "validation"):
        rows = unpaired_rows(config, run, split, tokenizer, console_print)
        random.Random(config.seed).shuffle(rows)
        splits[split] = rows
    good = sum(row["label"] for row in splits["train"])
    lora = uses_adapter(config.train.method)
    weights_dtype = compute_dtype if lora and config.train.low_precision_base else torch.float32
    packed = config.train.packing and config.train.method not in ("prefix", "prompt")
    if config.train.packing and not packed:
        console_print(f"train: train.method {config.train.method} adds virtual tokens; TRL's padded path for this "
                      "run (slower; train.packing does not apply)")
    model = load_causal_lm(base_path, weights_dtype, device, register_packed_attention() if packed else None)
    model.config.use_cache = False
    if packed:
        install_reply_log_probs(model, compute_dtype)  # before TRL adds its fused LM head, which passes it on
        if config.train.lean_activations:
            recompute_cheap_activations(model)
    check_guard(config, "kto")
    reset_record(run)
    if config.train.guard.freeze_layers:
        freeze_lowest_blocks(model, config.train.guard.freeze_layers)

    checkpoint = resume_point(run, resume, console_print)
    arguments = common_training_arguments(config, run, device, compute_dtype)
    if packed:
        # The reference is scored once, two batches at a time, in the training order (the KL pairing depends on it).
        arguments.update(include_num_input_tokens_seen="all", precompute_ref_batch_size=2 * config.train.batch_size)
    args = KTOConfig(**arguments, max_length=config.data.max_length, beta=preference.beta, loss_type=loss,
                     desirable_weight=preference.desirable_weight, undesirable_weight=preference.undesirable_weight,
                     precompute_ref_log_probs=packed or (preference.precompute_ref_log_probs and not lora))
    model, peft_config = trainer_lora(model, config, "CAUSAL_LM") if lora else (model, None)
    trainer_class = packed_kto_trainer() if packed else KTOTrainer
    extra = {"data_collator": PackedPairCollator(config.data.max_length, KTO_SIDES, KL_SIDE)} if packed else {}
    try:
        trainer = trainer_class(model=model, ref_model=None, args=args,
                                train_dataset=Dataset.from_list(splits["train"]),
                                eval_dataset=Dataset.from_list(splits["validation"]), processing_class=tokenizer,
                                callbacks=trainer_callbacks(config, run, tracker), peft_config=peft_config, **extra)
    except ValueError as exc:
        raise ConfigError(f"train.preference: TRL refused the settings: {exc}") from None
    replace_default_printing(trainer)
    if lora and weights_dtype != torch.float32:
        keep_adapter_inputs_in_compute_dtype(trainer.model)
    console_print(
        f"train: kto ({config.train.method}) on {config.model.name}, {device} "
        f"{str(compute_dtype).removeprefix('torch.')}, {len(splits['train'])} rows ({good} desirable, "
        f"{len(splits['train']) - good} undesirable), reference: "
        + reference_description(config, lora, packed or (args.precompute_ref_log_probs and not lora)) + ", "
        + (f"{config.train.max_steps} steps" if config.train.max_steps else f"{config.train.epochs:g} epoch(s)")
        + (f", resuming from {checkpoint.name}" if checkpoint else "")
    )
    result, elapsed = fit(trainer, run, checkpoint)
    drop_reference_adapter(trainer.model)
    if config.train.guard.interpolate is not None and trainer.is_world_process_zero():
        interpolate_trained(config, run, trainer.model, base_path, tokenizer, device, console_print,
                            lambda m, t=trainer: t.evaluate()["eval_loss"])
    return finish_training(trainer, tokenizer, config, run, result, elapsed, device, compute_dtype,
                           recipe="kto", loss=loss, beta=preference.beta, desirable_rows=good,
                           undesirable_rows=len(splits["train"]) - good)


@functools.cache
def packed_kto_trainer():
    """KTOTrainer on packed rows (prompt, completion, KL completion: tuneloop.train.packed_preference), ref cached."""
    import torch
    from trl import KTOTrainer

    class PackedKTOTrainer(PackedTrainerSteps, KTOTrainer):
        """KTOTrainer whose batches are PackedPairCollator rows and whose losses come from summed reply log-probs.

        Each step scores every row's prompt and completion in one forward, then its mismatched KL completion in a
        no-grad pass reading the prompt from that forward's cache (TRL computes the KL side without gradients too),
        so backward runs over prompts and completions only.
        """

        def compute_ref_log_probs(self, model, inputs):
            # TRL calls this once per batch before training (precompute_ref_log_probs); the result is cached.
            sums = self.reference_log_probs(model, inputs)
            rows = inputs["label"].shape[0]
            return sums[:rows], (sums[rows:] if self.calculate_KL else None)

        def _compute_loss(self, model, inputs, return_outputs):
            mode = "train" if self.model.training else "eval"
            sums, _, _ = sequence_log_probs(model, inputs)
            labels = inputs["label"]
            rows = labels.shape[0]
            log_probs = sums[:rows]
            gather = self.accelerator.gather_for_metrics
            if self.calculate_KL:
                kl = (sums[rows:].detach() - inputs["ref_KL_logps"]).mean()
                kl = gather(kl).mean().clamp(min=0)
            else:
                kl = torch.zeros((), device=log_probs.device)
            losses, rewards = kto_losses(self.loss_type, self.beta, self.desirable_weight, self.undesirable_weight,
                                         log_probs, inputs["ref_logps"], labels, kl)
            metrics = self._metrics[mode]
            metrics["kl"].append(kl.item())
            mean_reward = {}
            for side, chosen in (("chosen", labels), ("rejected", ~labels)):
                count = gather(chosen.sum()).sum().item()
                if count:
                    mean_reward[side] = gather(rewards[chosen].sum()).sum().item() / count
                    metrics[f"rewards/{side}"].append(mean_reward[side])
                    metrics[f"logps/{side}"].append(gather(log_probs.detach()[chosen].sum()).sum().item() / count)
            if len(mean_reward) == 2:
                metrics["rewards/margins"].append(mean_reward["chosen"] - mean_reward["rejected"])
            if mode == "train":
                self._total_train_tokens += gather(inputs["sequence_tokens"][:rows].sum()).sum().item()
            metrics["num_tokens"] = [self._total_train_tokens]
            loss = losses.mean()
            return (loss, {}) if return_outputs else loss

        def _track_num_input_tokens(self, inputs):
            # The rows' prompt + completion tokens, as TRL counts them (the KL completions are not counted).
            if self.args.include_num_input_tokens_seen != "no":
                rows = inputs["label"].shape[0]
                tokens = inputs["sequence_tokens"][:rows].sum().to(self.args.device)
                self.state.num_input_tokens_seen += self.accelerator.gather(tokens).sum().item()

    return PackedKTOTrainer
