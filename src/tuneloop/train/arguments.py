"""The Trainer arguments every recipe shares, derived from the run config (recipes add their own on top)."""

from __future__ import annotations

import math

from tuneloop.config import RunConfig
from tuneloop.workspace import RunDir


def common_training_arguments(config: RunConfig, run: RunDir, device: str, compute_dtype) -> dict:
    """Keyword arguments for transformers.TrainingArguments (or a subclass such as TRL's SFTConfig)."""
    import torch

    train = config.train
    # load_best_model_at_end needs checkpoints on evaluation steps.
    save_steps = train.eval_every * max(1, math.ceil(train.save_every / train.eval_every))
    return {
        "output_dir": str(run.checkpoints),
        "seed": config.seed,
        "num_train_epochs": train.epochs,
        "max_steps": train.max_steps or -1,
        "learning_rate": train.learning_rate,
        "per_device_train_batch_size": train.batch_size,
        "per_device_eval_batch_size": train.batch_size,
        "gradient_accumulation_steps": train.gradient_accumulation,
        "warmup_steps": train.warmup_ratio,  # a float below 1 is a share of the total steps
        "weight_decay": train.weight_decay,
        "lr_scheduler_type": train.lr_scheduler,
        "max_grad_norm": train.max_grad_norm,
        "activation_checkpointing": train.gradient_checkpointing,
        "bf16": compute_dtype == torch.bfloat16,
        "fp16": compute_dtype == torch.float16,
        "use_cpu": device == "cpu",
        "eval_strategy": "steps",
        "eval_steps": train.eval_every,
        "save_strategy": "steps",
        "save_steps": save_steps,
        "save_total_limit": train.save_total_limit,
        "load_best_model_at_end": train.early_stopping_patience is not None,
        "metric_for_best_model": "eval_loss",
        "greater_is_better": False,
        "logging_steps": train.logging_steps,
        "include_num_input_tokens_seen": "non_padding",
        "report_to": "none",  # tracking goes through tuneloop.train.tracking
        "disable_tqdm": True,  # tuneloop.train.callbacks.ProgressCallback draws the bar
        "dataloader_num_workers": 0,
    }


def wrap_with_lora(model, config: RunConfig, task_type: str, modules_to_save: list[str] | None = None):
    """The model with LoRA adapters on train.lora.target_modules (PEFT); only the adapters (and
    modules_to_save, e.g. a new classification head) train."""
    from peft import get_peft_model

    if config.model.adapter:
        return continue_adapter(model, config.model.adapter)
    model = get_peft_model(model, lora_config(config, task_type, modules_to_save))
    if config.train.gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed LoRA needs a grad path through frozen embeddings
    return model


def lora_config(config: RunConfig, task_type: str, modules_to_save: list[str] | None = None):
    """PEFT's LoraConfig for train.lora (for trainers that wrap the model themselves, such as TRL's DPOTrainer)."""
    from peft import LoraConfig

    lora = config.train.lora
    return LoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type=task_type,
        modules_to_save=modules_to_save,
    )


def trainer_lora(model, config: RunConfig, task_type: str):
    """(model, peft_config) for TRL trainers that wrap the model themselves: a fresh adapter's LoraConfig, or,
    with model.adapter, the model already holding that adapter (trainable) and no config. Either way the
    trainer's reference is the model with the adapter switched off."""
    if config.model.adapter:
        return continue_adapter(model, config.model.adapter), None
    return model, lora_config(config, task_type)


def continue_adapter(model, adapter_dir: str):
    """The model with an existing LoRA adapter loaded trainable (model.adapter): training continues from it."""
    from pathlib import Path

    from peft import PeftModel

    from tuneloop.errors import ConfigError

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise ConfigError(f"model.adapter: {adapter_dir} holds no adapter_config.json; point it at a LoRA run's "
                          "adapter/ directory, or remove the key to train a new adapter.")
    return PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)
