"""Continued-pretraining recipe: causal-LM loss on every token of raw domain text, LoRA or full.

Reads data/{train,validation}.jsonl ({"text"} documents written by the data stage from .txt, or
jsonl/csv rows with a "text" column) and writes adapter/ (LoRA) or model/ (full), checkpoints/,
train_log.jsonl and train_summary.json into the run directory.

Features:
    - Documents tokenized (BOS where the tokenizer adds one), joined with EOS and cut into blocks of
      data.max_length tokens (tuneloop.data.text_blocks): no padding, no truncation, every token
      trained on; documents may attend across the EOS, as in standard pretraining.
    - LoRA (rank, alpha, dropout, target modules) through PEFT, or full fine-tuning (train.method).
    - Device picked automatically (cuda, mps, cpu); bf16 autocast where the hardware runs it fast.
    - Validation loss on the held-out documents, packed the same way, every train.eval_every steps;
      early stopping on it; the best weights are kept.
    - A checkpoint every train.save_every steps; Ctrl-C or SIGTERM saves one and stops; `resume=True`
      continues from the newest checkpoint.
    - Forgetting guards (train.guard, docs/forgetting.md): replay of general text (files or the base model's
      own replies), kl_to_base, freeze_layers (full) and interpolate.
    - The tokenizer (with its chat template, if any) is saved beside the weights, so a later SFT stage
      or `tuneloop chat` can use the result directly.

Raises:
    DataError: the tokenizer has no EOS token to separate documents with.
    TrainingInterrupted: the run was stopped by a signal after saving a checkpoint.
"""

from __future__ import annotations

from tuneloop.config.schema import RunConfig
from tuneloop.data.text_blocks import BlockCollator, pack_texts
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.load import load_tokenizer
from tuneloop.models.registry import resolve_model
from tuneloop.train.arguments import common_training_arguments
from tuneloop.train.callbacks import replace_default_printing, trainer_callbacks
from tuneloop.train.fit import finish_training, fit, release_memory, resume_point
from tuneloop.train.guard.kl import kl_trainer
from tuneloop.train.guard.switches import (
    check_guard,
    guarded_train_rows,
    interpolate_trained,
    record,
    reset_record,
    setup_kl_term,
)
from tuneloop.train.model_setup import setup_model
from tuneloop.train.validation_loss import block_losses, perplexity_scores
from tuneloop.workspace import RunDir, read_jsonl


def train_pretraining(config: RunConfig, run: RunDir, resume: bool = False, console_print=print,
                      tracker=None) -> dict:
    """Train and save; return the summary also written to train_summary.json."""
    from transformers import Trainer, TrainingArguments, set_seed

    set_seed(config.seed)
    device = pick_device(config.model.device)
    compute_dtype = pick_dtype(device, config.model.dtype)
    base_path = resolve_model(config.model.name, console_print)

    tokenizer = load_tokenizer(base_path)
    guard = config.train.guard
    check_guard(config, "pretrain")
    reset_record(run)
    train_rows = guarded_train_rows(config, run, read_jsonl(run.split("train")), "text", base_path, tokenizer,
                                    device, compute_dtype, console_print) if guard.active() else None
    (train_dataset, validation_dataset), packing = _setup_data(config, run, tokenizer, console_print, train_rows)
    model = setup_model(config, base_path, device, compute_dtype)

    checkpoint = resume_point(run, resume, console_print)

    trainer = (kl_trainer(Trainer) if guard.kl_to_base else Trainer)(
        model=model,
        args=TrainingArguments(**common_training_arguments(config, run, device, compute_dtype),
                               remove_unused_columns=False),
        train_dataset=train_dataset,
        eval_dataset=validation_dataset,
        processing_class=tokenizer,
        data_collator=BlockCollator(tokenizer.pad_token_id),
        callbacks=trainer_callbacks(config, run, tracker),
    )
    replace_default_printing(trainer)
    if guard.kl_to_base:
        setup_kl_term(trainer, config, base_path, device, compute_dtype)

    console_print(
        f"train: continued pretraining ({config.train.method}) on {config.model.name}, {device} "
        f"{str(compute_dtype).removeprefix('torch.')}, {len(train_dataset)} blocks of {config.data.max_length} tokens, "
        + (f"{config.train.max_steps} steps" if config.train.max_steps else f"{config.train.epochs:g} epoch(s)")
        + (f", resuming from {checkpoint.name}" if checkpoint else "")
    )
    result, elapsed = fit(trainer, run, checkpoint)
    if guard.kl_to_base:
        record(run, "kl_to_base", trainer.guard_kl_record())
    if guard.interpolate is not None:
        blocks = validation_dataset["input_ids"]
        interpolate_trained(config, run, trainer.model, base_path, tokenizer, device, console_print,
                            lambda m: perplexity_scores(*block_losses(m, blocks, config.train.batch_size),
                                                        "validation")["validation_loss"])
    summary = finish_training(trainer, tokenizer, config, run, result, elapsed, device, compute_dtype, model=model,
                              task="continued pretraining", packing=packing)
    del trainer, model
    release_memory(device)
    return summary


def _setup_data(config: RunConfig, run: RunDir, tokenizer, console_print, train_rows: list[dict] | None = None):
    """Train and validation documents packed into blocks, and what packing did to each (for the summary);
    train_rows (train.guard's mix) replaces the train split."""
    from datasets import Dataset

    datasets, packing = [], {}
    for split in ("train", "validation"):
        source = train_rows if split == "train" and train_rows is not None else read_jsonl(run.split(split))
        texts = [row["text"] for row in source]
        blocks, stats = pack_texts(tokenizer, texts, config.data.max_length)
        console_print(f"data: {split}: {stats.describe()}")
        datasets.append(Dataset.from_dict({"input_ids": blocks}))
        packing[split] = stats.as_dict()
    return tuple(datasets), packing
