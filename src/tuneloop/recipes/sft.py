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

from tuneloop.config import RunConfig
from tuneloop.data.encode import encode_examples
from tuneloop.data.templates import apply_template_choice
from tuneloop.errors import ConfigError, TuneloopError
from tuneloop.evaluate.loss import validation_loss
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.load import load_causal_lm, load_tokenizer
from tuneloop.models.registry import resolve_model
from tuneloop.train.arguments import (
    BASE_CHANGING_INITS,
    common_training_arguments,
    method_settings,
    uses_adapter,
    wrap_with_adapter,
)
from tuneloop.train.callbacks import JsonlLogCallback, ProgressCallback
from tuneloop.train.chunked_loss import install_chunked_loss, supports_chunked_loss
from tuneloop.train.fit import fit, resume_point, training_summary
from tuneloop.train.guard.freeze import freeze_lowest_blocks
from tuneloop.train.guard.interpolate import interpolate_after_training
from tuneloop.train.guard.kl import base_reference, frozen_copy, kl_trainer
from tuneloop.train.guard.switches import check_guard, forgetting_measure, guarded_train_rows, record, reset_record
from tuneloop.train.lean_activations import recompute_cheap_activations
from tuneloop.train.memory_trim import MemoryTrimCallback
from tuneloop.train.packed_attention import register_packed_attention
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
    if main_process:
        _save(config, run, trainer, tokenizer)
    summary = training_summary(trainer, result, elapsed, model, config.train.method, device, compute_dtype)
    if main_process:
        write_json(run.root / "train_summary.json", summary)
    del trainer, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return summary


def setup_tokenizer(config: RunConfig, base_path: str):
    tokenizer = load_tokenizer(base_path)
    apply_template_choice(tokenizer, config.data.chat_template, config.model.name)
    return tokenizer


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


def setup_model(config: RunConfig, base_path: str, device: str, compute_dtype, run: RunDir | None = None):
    """The model to train: the base wrapped in train.method's adapter, or the whole model (full).

    run: where a PiSSA/OLoRA adapter keeps its starting point, to convert the trained one back (see _save).
    """
    import torch

    method = config.train.method
    # Trained weights stay fp32 (the optimizer's master copy); autocast runs the matmuls in the compute dtype.
    # Frozen base weights under an adapter need no master copy: kept in the compute dtype they are half the
    # memory and autocast no longer converts them on every matmul.
    adapter = uses_adapter(method)
    weights_dtype = compute_dtype if adapter and config.train.low_precision_base else torch.float32
    attention = register_packed_attention() if config.train.packing else None
    if method == "qlora":
        model = load_4bit_causal_lm(base_path, compute_dtype, device, attention)
    else:
        model = load_causal_lm(base_path, weights_dtype, device, attention)
    model.config.use_cache = False  # the KV cache is useless in training and costs memory
    if config.train.lean_activations:
        recompute_cheap_activations(model)
    if not adapter:
        if config.train.guard.freeze_layers:
            freeze_lowest_blocks(model, config.train.guard.freeze_layers)
        return model
    model = wrap_with_adapter(model, config, "CAUSAL_LM")  # PEFT keeps the adapter weights in fp32
    if weights_dtype != torch.float32 and method != "qlora":
        keep_adapter_inputs_in_compute_dtype(model)
    if method in ("lora", "dora", "qlora") and config.train.lora.init in BASE_CHANGING_INITS:
        if run is None:  # the recipe saves its own adapter, without the conversion below
            raise ConfigError(f"train.lora.init: {config.train.lora.init} is supported by the SFT recipe (chat, "
                              "instruction data); use init: default or gaussian here.")
        _save_initial_adapter(model, run)
    return model


def load_4bit_causal_lm(base_path: str, compute_dtype, device: str, attention: str | None):
    """The base quantized to 4-bit NF4 by bitsandbytes (QLoRA), ready for k-bit training."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TuneloopError(
            "train.method: qlora needs bitsandbytes, which is not installed. Install it with "
            "`pip install 'tuneloop[qlora]'` (or `pip install bitsandbytes`); QLoRA is meant for CUDA GPUs, where "
            "it cuts the base's memory about 4x. On a CPU it runs, but far slower than lora."
        ) from None
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=compute_dtype)
    options = {"attn_implementation": attention} if attention else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(base_path, quantization_config=quantization, device_map=device,
                                                     **options)
    except Exception as exc:  # transformers refuses 4-bit where bitsandbytes has no backend for the device
        raise TuneloopError(f"train.method: qlora could not load {base_path} in 4-bit on {device}: {exc}\n"
                            "QLoRA needs a CUDA GPU (or a bitsandbytes build for this device); use lora.") from None
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


INITIAL_ADAPTER = "adapter_init"


def _save_initial_adapter(model, run: RunDir) -> None:
    """PiSSA/OLoRA move part of the base weights into the adapter; the starting adapter lets PEFT convert the
    trained one into a plain LoRA (of twice the rank) that works on the untouched base."""
    settings = model.peft_config["default"]
    init = settings.init_lora_weights
    settings.init_lora_weights = True  # saved as a plain starting point, as PEFT's conversion expects
    model.save_pretrained(str(run.root / INITIAL_ADAPTER))
    settings.init_lora_weights = init


def keep_adapter_inputs_in_compute_dtype(model) -> None:
    """Stop PEFT from casting each LoRA layer's input to the adapter's fp32 before autocast casts it back.

    Training runs under autocast (bf16=True in the arguments), which runs the adapter matmul in the compute
    dtype either way. PEFT's round trip made a separate bf16 copy of the input for every adapter, each kept
    for backward: q, k and v saved three copies of one tensor. Without it the adapters save the input they
    share (on smollm2-135m their saved inputs fell from 200 to 100 KB per token).
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False


def setup_kl_term(trainer, config: RunConfig, base_path: str, device: str, compute_dtype) -> None:
    """Give a kl_trainer its weight and its base: the adapter switched off, or a frozen copy (full)."""
    trainer.guard_kl_weight = config.train.guard.kl_to_base
    if not uses_adapter(config.train.method):
        attention = register_packed_attention() if config.train.packing else None
        trainer.guard_reference = base_reference(None, frozen_copy(base_path, compute_dtype, device, attention))


def interpolate_trained(config: RunConfig, run: RunDir, model, base_path: str, tokenizer, device: str,
                        console_print, validation_loss_of) -> None:
    """train.guard.interpolate on the trained model (in place), recorded in guard.json."""
    import time

    started = time.perf_counter()
    measure = None
    if config.train.guard.interpolate.alpha == "auto":
        measure = forgetting_measure(config, tokenizer, validation_loss_of, device, console_print)
    found = interpolate_after_training(model, config.train.guard.interpolate, config.train.method, base_path,
                                       measure, console_print)
    found["seconds"] = round(time.perf_counter() - started, 1)
    model.train()
    record(run, "interpolate", found)


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


def trainer_callbacks(config: RunConfig, run: RunDir, tracker) -> list:
    from transformers import EarlyStoppingCallback

    from tuneloop.train.tracking import TrackingCallback

    callbacks = [ProgressCallback(), JsonlLogCallback(run.train_log)]
    if tracker is not None:
        callbacks.append(TrackingCallback(tracker))
        callbacks.extend(tracker.trainer_callbacks())
    if config.train.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.train.early_stopping_patience))
    if config.train.trim_memory_every is not None:
        callbacks.append(MemoryTrimCallback(config.train.trim_memory_every))
    return callbacks


def replace_default_printing(trainer) -> None:
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_callback import ProgressCallback as HFProgress

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(HFProgress)


def _save(config: RunConfig, run: RunDir, trainer, tokenizer) -> None:
    target = run.adapter if uses_adapter(config.train.method) else run.model
    initial = run.root / INITIAL_ADAPTER
    if initial.is_dir():  # PiSSA / OLoRA: saved as the equivalent plain LoRA for the unmodified base
        trainer.model.save_pretrained(str(target), path_initial_model_for_weight_conversion=str(initial))
    else:
        trainer.model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))  # carries the chat template used in training
