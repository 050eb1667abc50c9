"""SFT recipe: supervised fine-tuning of a causal language model, LoRA or full, on TRL's SFTTrainer.

Reads data/{train,validation}.jsonl written by the data stage and writes adapter/ (LoRA) or
model/ (full), checkpoints/, train_log.jsonl and train_summary.json into the run directory.

Features:
    - train.method through PEFT: LoRA (rank, alpha, dropout, target modules, rsLoRA, init), DoRA, QLoRA
      (LoRA on a 4-bit NF4 base, bitsandbytes), IA3, prefix or prompt tuning; or full fine-tuning.
      Prefix and prompt tuning put virtual tokens in front of every input, so packing and the chunked
      loss are switched off for them (one console line says so).
    - Loss only on assistant replies by default (data.train_on_prompt: true to include prompts).
    - Fast by default, each part with a switch (see docs/performance.md): padding-free packing
      (train.packing; attention kept within each example by tuneloop.train.packed_attention), a
      chunked loss over target tokens only (train.chunked_loss; tuneloop.train.chunked_loss), frozen
      LoRA base weights in bf16 (train.low_precision_base), norms and gated-MLP activations recomputed in backward
      (train.lean_activations; tuneloop.train.lean_activations), no gradient checkpointing.
    - Forgetting guards (train.guard; tuneloop.train.guard, docs/forgetting.md): replay and self-distillation
      change the training rows, kl_to_base adds a KL term to the base (and takes the slower full-logits
      path), freeze_layers freezes the lowest blocks (full), interpolate moves the weights back toward the base.
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

import functools

from tuneloop.config.schema import RunConfig
from tuneloop.data.encode import encode_examples
from tuneloop.errors import TuneloopError
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.registry import resolve_model
from tuneloop.train.arguments import (
    common_training_arguments,
    method_settings,
    uses_adapter,
)
from tuneloop.train.callbacks import replace_default_printing, trainer_callbacks
from tuneloop.train.chunked_loss import install_chunked_loss, supports_chunked_loss
from tuneloop.train.fit import finish_training, fit, release_memory, resume_point, save_trained
from tuneloop.train.guard.kl import kl_trainer
from tuneloop.train.guard.switches import (
    check_guard,
    guarded_train_rows,
    interpolate_trained,
    record,
    reset_record,
    setup_kl_term,
)
from tuneloop.train.model_setup import INITIAL_ADAPTER, setup_model, setup_tokenizer
from tuneloop.train.validation_loss import validation_loss
from tuneloop.workspace import RunDir, read_jsonl


def train_sft(config: RunConfig, run: RunDir, resume: bool = False, console_print=print, tracker=None) -> dict:
    """Train and save; return the summary also written to train_summary.json."""
    from transformers import set_seed
    from trl import SFTTrainer

    set_seed(config.seed)
    device = pick_device(config.model.device)
    compute_dtype = pick_dtype(device, config.model.dtype)
    base_path = resolve_model(config.model.name, console_print)
    config = method_settings(config, device, console_print)

    tokenizer = setup_tokenizer(config, base_path)
    guard = config.train.guard
    check_guard(config, "sft")
    reset_record(run)
    train_rows = guarded_train_rows(config, run, read_jsonl(run.split("train")), "chat", base_path, tokenizer,
                                    device, compute_dtype, console_print) if guard.active() else None
    train_dataset, validation_dataset = _setup_data(config, run, tokenizer, console_print, train_rows)
    model = setup_model(config, base_path, device, compute_dtype, run)

    checkpoint = resume_point(run, resume, console_print)

    args = _training_arguments(config, run, device, compute_dtype)
    # The KL term needs both models' full logits: such a run takes the plain (slower) loss path.
    chunked = config.train.chunked_loss and supports_chunked_loss(_causal_lm(model)) and guard.kl_to_base is None
    trainer_class = kl_trainer(SFTTrainer) if guard.kl_to_base else chunked_loss_trainer() if chunked else SFTTrainer
    trainer = trainer_class(
        model=model,
        args=args,
        train_dataset=train_dataset,
        eval_dataset=validation_dataset,
        processing_class=tokenizer,
        callbacks=trainer_callbacks(config, run, tracker),
    )
    replace_default_printing(trainer)
    if guard.kl_to_base:
        setup_kl_term(trainer, config, base_path, device, compute_dtype)
    if chunked:  # after SFTTrainer, which patches the forward with its own fused head
        install_chunked_loss(_causal_lm(trainer.model), compute_dtype)

    console_print(
        f"train: {config.train.method} on {config.model.name}, {device} {str(compute_dtype).removeprefix('torch.')}, "
        f"{len(train_dataset)} examples, "
        + (f"{config.train.max_steps} steps" if config.train.max_steps else f"{config.train.epochs:g} epoch(s)")
        + (f", resuming from {checkpoint.name}" if checkpoint else "")
    )
    result, elapsed = fit(trainer, run, checkpoint)
    main_process = trainer.is_world_process_zero()  # in a multi-process run, process 0 alone writes
    if main_process and guard.kl_to_base:
        record(run, "kl_to_base", trainer.guard_kl_record())
    if main_process and guard.interpolate is not None:
        validation_rows = validation_dataset.to_list()
        interpolate_trained(config, run, trainer.model, base_path, tokenizer, device, console_print,
                            lambda m: validation_loss(m, validation_rows, tokenizer.pad_token_id,
                                                      config.evaluate.batch_size)["validation_loss"])
    summary = finish_training(trainer, tokenizer, config, run, result, elapsed, device, compute_dtype,
                              save=lambda t: _save(config, run, t, tokenizer), model=model)
    del trainer, model
    release_memory(device)
    return summary


def _setup_data(config: RunConfig, run: RunDir, tokenizer, console_print, train_rows: list[dict] | None = None):
    """Encoded train and validation datasets; train_rows (train.guard's mix) replaces the train split."""
    from datasets import Dataset

    encoded = {}
    for split in ("train", "validation"):
        source = train_rows if split == "train" and train_rows is not None else read_jsonl(run.split(split))
        rows, stats = encode_examples(tokenizer, source, config.data.max_length, config.data.train_on_prompt)
        if stats.truncated or stats.dropped_no_target:
            console_print(
                f"data: {split}: {stats.truncated} of {stats.examples} example(s) longer than data.max_length="
                f"{config.data.max_length} were truncated; {stats.dropped_no_target} lost every target token "
                "and were dropped. Raise data.max_length to keep them."
            )
        if stats.tools_as_text and split == "train":
            console_print(f"data: the chat template has no tool support; the tool calls of {stats.tools_as_text} "
                          "example(s) are written as <tool_call> JSON in the replies (docs/data-formats.md)")
        if not rows:
            raise TuneloopError(f"data: no {split} example has a token to learn after truncation.")
        encoded[split] = Dataset.from_list(rows)
    return encoded["train"], encoded["validation"]


def _causal_lm(model):
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _training_arguments(config: RunConfig, run: RunDir, device: str, compute_dtype):
    from trl import SFTConfig

    arguments = common_training_arguments(config, run, device, compute_dtype)
    if config.train.packing:
        arguments["include_num_input_tokens_seen"] = "all"  # a packed batch holds no padding: every token is real
    return SFTConfig(
        **arguments,
        padding_free=config.train.packing,  # TRL's collator: one row per batch, position ids restart per example
        # tuneloop.data.encode already truncated to data.max_length (and counted); TRL refuses a limit it cannot
        # enforce on padding-free batches.
        max_length=None if config.train.packing else config.data.max_length,
        dataset_kwargs={"skip_prepare_dataset": True},  # data is tokenized and masked by tuneloop.data.encode
        remove_unused_columns=False,
    )


@functools.cache
def chunked_loss_trainer():
    """The SFTTrainer subclass that takes its loss from tuneloop.train.chunked_loss."""
    from trl import SFTTrainer

    class ChunkedLossSFTTrainer(SFTTrainer):
        """SFTTrainer whose loss comes from tuneloop.train.chunked_loss (target tokens only, chunked)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            outputs = model(**inputs, tuneloop_chunked_loss=True, num_items_in_batch=num_items_in_batch)
            loss = outputs.loss
            # As Trainer.compute_loss: num_items_in_batch counts every rank's tokens and DDP averages gradients.
            if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                loss = loss * self.accelerator.num_processes
            return (loss, outputs) if return_outputs else loss

    return ChunkedLossSFTTrainer


def _save(config: RunConfig, run: RunDir, trainer, tokenizer) -> None:
    target = run.adapter if uses_adapter(config.train.method) else run.model
    initial = run.root / INITIAL_ADAPTER
    # PiSSA / OLoRA: saved as the equivalent plain LoRA for the unmodified base
    options = {"path_initial_model_for_weight_conversion": str(initial)} if initial.is_dir() else {}
    save_trained(trainer.model, tokenizer, target, **options)
