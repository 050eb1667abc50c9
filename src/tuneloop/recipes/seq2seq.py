"""Seq2seq recipe: fine-tune an encoder-decoder model (T5, BART style), LoRA or full, on (source, target) pairs.

Reads data/{train,validation}.jsonl written by the data stage and writes adapter/ (LoRA) or model/
(full), checkpoints/, train_log.jsonl and train_summary.json into the run directory. `train_stage`
picks this recipe whenever the model's config says is_encoder_decoder.

Features:
    - Any AutoModelForSeq2SeqLM: a local HF directory or a hub id.
    - Pairs from summarization (instruction and document -> summary), prompt_completion, alpaca or
      chat data (the turns before the final reply -> the reply); see `tuneloop.data.pairs`.
    - LoRA (task type SEQ_2_SEQ_LM) through PEFT, or full fine-tuning (train.method).
    - Sources and targets truncated at data.max_length, each side counted and reported.
    - Loss on target tokens only (label padding is -100); dynamic padding per batch.
    - Device picked automatically (cuda, mps, cpu); bf16 autocast where the hardware runs it fast.
    - Validation loss every train.eval_every steps; early stopping on it; the best weights are kept.
    - A checkpoint every train.save_every steps (rounded to a multiple of eval_every); Ctrl-C or
      SIGTERM saves one and stops; `resume=True` continues from the newest checkpoint.
    - A progress bar with ETA, loss and source tokens per second.

Raises:
    DataError: plain-text data, which has no target for the decoder to learn.
    TrainingInterrupted: the run was stopped by a signal after saving a checkpoint.
"""

from __future__ import annotations

from tuneloop.config.schema import RunConfig
from tuneloop.data.pairs import encode_pairs
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.load import load_seq2seq_lm, load_tokenizer
from tuneloop.models.registry import resolve_model
from tuneloop.train.arguments import common_training_arguments, wrap_with_lora
from tuneloop.train.callbacks import replace_default_printing, trainer_callbacks
from tuneloop.train.fit import finish_training, fit, release_memory, resume_point
from tuneloop.workspace import RunDir, read_jsonl


def train_seq2seq(config: RunConfig, run: RunDir, resume: bool = False, console_print=print, tracker=None) -> dict:
    """Train and save; return the summary also written to train_summary.json."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

    set_seed(config.seed)
    device = pick_device(config.model.device)
    compute_dtype = pick_dtype(device, config.model.dtype)
    base_path = resolve_model(config.model.name, console_print)

    tokenizer = load_tokenizer(base_path)
    train_dataset, validation_dataset = _setup_data(config, run, tokenizer, console_print)
    model = _setup_model(config, base_path, device)

    checkpoint = resume_point(run, resume, console_print)

    trainer = Trainer(
        model=model,
        args=TrainingArguments(**common_training_arguments(config, run, device, compute_dtype)),
        train_dataset=train_dataset,
        eval_dataset=validation_dataset,
        processing_class=tokenizer,
        # Pads sources with the pad token and targets with -100; the model builds decoder inputs from the labels.
        data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=-100),
        callbacks=trainer_callbacks(config, run, tracker),
    )
    replace_default_printing(trainer)

    console_print(
        f"train: {config.train.method} seq2seq on {config.model.name}, {device} "
        f"{str(compute_dtype).removeprefix('torch.')}, {len(train_dataset)} pairs, "
        + (f"{config.train.max_steps} steps" if config.train.max_steps else f"{config.train.epochs:g} epoch(s)")
        + (f", resuming from {checkpoint.name}" if checkpoint else "")
    )
    result, elapsed = fit(trainer, run, checkpoint)
    summary = finish_training(trainer, tokenizer, config, run, result, elapsed, device, compute_dtype, model=model,
                              task="seq2seq")
    del trainer, model
    release_memory(device)
    return summary


def _setup_data(config: RunConfig, run: RunDir, tokenizer, console_print):
    from datasets import Dataset

    encoded = {}
    for split in ("train", "validation"):
        rows, stats = encode_pairs(tokenizer, read_jsonl(run.split(split)), config.data.max_length)
        if stats.truncated_sources or stats.truncated_targets:
            console_print(
                f"data: {split}: of {stats.examples} pairs, {stats.truncated_sources} source(s) and "
                f"{stats.truncated_targets} target(s) were longer than data.max_length={config.data.max_length} "
                "tokens and were truncated. Raise data.max_length to keep them whole."
            )
        encoded[split] = Dataset.from_list(rows)
    return encoded["train"], encoded["validation"]


def _setup_model(config: RunConfig, base_path: str, device: str):
    import torch

    # Weights stay fp32 (the optimizer's master copy); autocast runs the matmuls in the compute dtype.
    model = load_seq2seq_lm(base_path, torch.float32, device)
    model.config.use_cache = False  # the decoder's KV cache is useless in training and costs memory
    if config.train.method == "full":
        return model
    return wrap_with_lora(model, config, "SEQ_2_SEQ_LM")
