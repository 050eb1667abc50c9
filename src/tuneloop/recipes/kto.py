"""KTO recipe: tune a causal LM on thumbs-up/down rows (one completion each, good or bad) with TRL's KTOTrainer.

This is what a feedback log gives: no pairs, just replies people liked or did not. Reads data/{train,
validation}.jsonl (canonical unpaired rows; preference pairs are split into one desirable and one
undesirable row) and writes adapter/ (LoRA) or model/ (full), as recipes/dpo.py.

Settings: train.preference.loss (kto, or apo_zero_unpaired), beta, desirable_weight and undesirable_weight
(KTO's paper weighs the rarer side up so that weight * count is about equal on both sides). The reference
is the adapter switched off with LoRA (TRL wraps the model from a peft_config; no second copy), a second
copy with full fine-tuning unless train.preference.precompute_ref_log_probs.

The KL estimate of the kto loss pairs each row with its neighbour in a fixed-order batch, so TRL reads the
rows in order: they are shuffled here once, with the run's seed (a pair split in two would otherwise sit
side by side in every batch).

Raises:
    ConfigError: a loss KTO does not take, a batch size of 1 (the KL term needs neighbours).
    TrainingInterrupted: the run was stopped by a signal after saving a checkpoint.
"""

from __future__ import annotations

import random

from tuneloop.config.schema import RunConfig
from tuneloop.errors import ConfigError
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.load import load_causal_lm
from tuneloop.models.registry import resolve_model
from tuneloop.recipes.preference_data import unpaired_rows
from tuneloop.train.arguments import common_training_arguments, trainer_lora, uses_adapter
from tuneloop.train.callbacks import replace_default_printing, trainer_callbacks
from tuneloop.train.fit import finish_training, fit, resume_point
from tuneloop.train.guard.freeze import freeze_lowest_blocks
from tuneloop.train.guard.switches import check_guard, interpolate_trained, reset_record
from tuneloop.train.model_setup import keep_adapter_inputs_in_compute_dtype, setup_tokenizer
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
    model = load_causal_lm(base_path, weights_dtype, device)
    model.config.use_cache = False
    check_guard(config, "kto")
    reset_record(run)
    if config.train.guard.freeze_layers:
        freeze_lowest_blocks(model, config.train.guard.freeze_layers)

    checkpoint = resume_point(run, resume, console_print)
    arguments = common_training_arguments(config, run, device, compute_dtype)
    args = KTOConfig(**arguments, max_length=config.data.max_length, beta=preference.beta, loss_type=loss,
                     desirable_weight=preference.desirable_weight, undesirable_weight=preference.undesirable_weight,
                     precompute_ref_log_probs=preference.precompute_ref_log_probs and not lora)
    model, peft_config = trainer_lora(model, config, "CAUSAL_LM") if lora else (model, None)
    try:
        trainer = KTOTrainer(model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(splits["train"]),
                             eval_dataset=Dataset.from_list(splits["validation"]), processing_class=tokenizer,
                             callbacks=trainer_callbacks(config, run, tracker), peft_config=peft_config)
    except ValueError as exc:
        raise ConfigError(f"train.preference: TRL refused the settings: {exc}") from None
    replace_default_printing(trainer)
    if lora and weights_dtype != torch.float32:
        keep_adapter_inputs_in_compute_dtype(trainer.model)
    console_print(
        f"train: kto ({config.train.method}) on {config.model.name}, {device} "
        f"{str(compute_dtype).removeprefix('torch.')}, {len(splits['train'])} rows ({good} desirable, "
        f"{len(splits['train']) - good} undesirable), reference: "
        + ("the adapter switched off" if lora else "precomputed log-probs" if args.precompute_ref_log_probs
           else "a second copy") + ", "
        + (f"{config.train.max_steps} steps" if config.train.max_steps else f"{config.train.epochs:g} epoch(s)")
        + (f", resuming from {checkpoint.name}" if checkpoint else "")
    )
    result, elapsed = fit(trainer, run, checkpoint)
    if config.train.guard.interpolate is not None and trainer.is_world_process_zero():
        interpolate_trained(config, run, trainer.model, base_path, tokenizer, device, console_print,
                            lambda m, t=trainer: t.evaluate()["eval_loss"])
    return finish_training(trainer, tokenizer, config, run, result, elapsed, device, compute_dtype,
                           recipe="kto", loss=loss, beta=preference.beta, desirable_rows=good,
                           undesirable_rows=len(splits["train"]) - good)
