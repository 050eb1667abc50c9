"""SFT recipe: supervised fine-tuning of a causal language model, LoRA or full, on TRL's SFTTrainer.

Reads data/{train,validation}.jsonl written by the data stage and writes adapter/ (LoRA) or
model/ (full), checkpoints/, train_log.jsonl and train_summary.json into the run directory.

Features:
    - LoRA (rank, alpha, dropout, target modules) through PEFT, or full fine-tuning (train.method).
    - Loss only on assistant replies by default (data.train_on_prompt: true to include prompts).
    - Device picked automatically (cuda, mps, cpu); bf16 autocast where the hardware runs it fast.
    - Validation loss every train.eval_every steps; early stopping on it; the best weights are kept.
    - A checkpoint every train.save_every steps (rounded to a multiple of eval_every); Ctrl-C or
      SIGTERM saves one and stops; `resume=True` continues from the newest checkpoint.
    - A progress bar with ETA, loss and real (non-padding) tokens per second.

Raises:
    ConfigError: an option that cannot work (e.g. a chat template the model lacks).
    TrainingInterrupted: the run was stopped by a signal after saving a checkpoint.
"""

from __future__ import annotations

from tuneloop.config import RunConfig
from tuneloop.data.encode import encode_examples
from tuneloop.data.templates import apply_template_choice
from tuneloop.errors import TuneloopError
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.load import load_causal_lm, load_tokenizer
from tuneloop.models.registry import resolve_model
from tuneloop.train.arguments import common_training_arguments, wrap_with_lora
from tuneloop.train.callbacks import JsonlLogCallback, ProgressCallback
from tuneloop.train.fit import fit, resume_point, training_summary
from tuneloop.workspace import RunDir, read_jsonl, write_json


def train_sft(config: RunConfig, run: RunDir, resume: bool = False, console_print=print, tracker=None) -> dict:
    """Train and save; return the summary also written to train_summary.json."""
    import torch
    from transformers import set_seed
    from trl import SFTTrainer

    set_seed(config.seed)
    device = pick_device(config.model.device)
    compute_dtype = pick_dtype(device, config.model.dtype)
    base_path = resolve_model(config.model.name, console_print)

    tokenizer = setup_tokenizer(config, base_path)
    train_dataset, validation_dataset = _setup_data(config, run, tokenizer, console_print)
    model = setup_model(config, base_path, device)

    checkpoint = resume_point(run, resume, console_print)

    args = _training_arguments(config, run, device, compute_dtype)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=validation_dataset,
        processing_class=tokenizer,
        callbacks=trainer_callbacks(config, run, tracker),
    )
    replace_default_printing(trainer)

    console_print(
        f"train: {config.train.method} on {config.model.name}, {device} {str(compute_dtype).removeprefix('torch.')}, "
        f"{len(train_dataset)} examples, "
        + (f"{config.train.max_steps} steps" if config.train.max_steps else f"{config.train.epochs:g} epoch(s)")
        + (f", resuming from {checkpoint.name}" if checkpoint else "")
    )
    result, elapsed = fit(trainer, run, checkpoint)
    _save(config, run, trainer, tokenizer)
    summary = training_summary(trainer, result, elapsed, model, config.train.method, device, compute_dtype)
    write_json(run.root / "train_summary.json", summary)
    del trainer, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return summary


def setup_tokenizer(config: RunConfig, base_path: str):
    tokenizer = load_tokenizer(base_path)
    apply_template_choice(tokenizer, config.data.chat_template, config.model.name)
    return tokenizer


def _setup_data(config: RunConfig, run: RunDir, tokenizer, console_print):
    from datasets import Dataset

    encoded = {}
    for split in ("train", "validation"):
        rows, stats = encode_examples(
            tokenizer, read_jsonl(run.split(split)), config.data.max_length, config.data.train_on_prompt
        )
        if stats.truncated or stats.dropped_no_target:
            console_print(
                f"data: {split}: {stats.truncated} of {stats.examples} example(s) longer than data.max_length="
                f"{config.data.max_length} were truncated; {stats.dropped_no_target} lost every target token "
                "and were dropped. Raise data.max_length to keep them."
            )
        if not rows:
            raise TuneloopError(f"data: no {split} example has a token to learn after truncation.")
        encoded[split] = Dataset.from_list(rows)
    return encoded["train"], encoded["validation"]


def setup_model(config: RunConfig, base_path: str, device: str):
    import torch

    # Weights stay fp32 (the optimizer's master copy); autocast runs the matmuls in the compute dtype.
    model = load_causal_lm(base_path, torch.float32, device)
    model.config.use_cache = False  # the KV cache is useless in training and costs memory
    if config.train.method == "full":
        return model
    return wrap_with_lora(model, config, "CAUSAL_LM")


def _training_arguments(config: RunConfig, run: RunDir, device: str, compute_dtype):
    from trl import SFTConfig

    return SFTConfig(
        **common_training_arguments(config, run, device, compute_dtype),
        max_length=config.data.max_length,
        dataset_kwargs={"skip_prepare_dataset": True},  # data is tokenized and masked by tuneloop.data.encode
        remove_unused_columns=False,
    )


def trainer_callbacks(config: RunConfig, run: RunDir, tracker) -> list:
    from transformers import EarlyStoppingCallback

    from tuneloop.train.tracking import TrackingCallback

    callbacks = [ProgressCallback(), JsonlLogCallback(run.train_log)]
    if tracker is not None:
        callbacks.append(TrackingCallback(tracker))
    if config.train.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.train.early_stopping_patience))
    return callbacks


def replace_default_printing(trainer) -> None:
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_callback import ProgressCallback as HFProgress

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(HFProgress)


def _save(config: RunConfig, run: RunDir, trainer, tokenizer) -> None:
    target = run.adapter if config.train.method == "lora" else run.model
    trainer.model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))  # carries the chat template used in training
