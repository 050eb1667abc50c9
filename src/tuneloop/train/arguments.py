"""The Trainer arguments every recipe shares, derived from the run config (recipes add their own on top)."""

from __future__ import annotations

import math

from tuneloop.config.schema import RunConfig
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


# Methods that train an adapter (saved to adapter/) rather than every weight (saved to model/).
ADAPTER_METHODS = ("lora", "dora", "qlora", "ia3", "prefix", "prompt")
# Methods that learn virtual tokens put in front of every input: they cannot share a packed row, and the
# prompt they add is invisible to the padding-free collator and the chunked loss.
VIRTUAL_TOKEN_METHODS = ("prefix", "prompt")
# PEFT's init_lora_weights for each train.lora.init.
LORA_INITS = {"default": True, "gaussian": "gaussian", "pissa": "pissa", "olora": "olora", "orthogonal": "orthogonal"}
# Inits that move the base weights (the adapter holds their principal part): saved adapters are converted back.
BASE_CHANGING_INITS = ("pissa", "olora")


def uses_adapter(method: str) -> bool:
    return method in ADAPTER_METHODS


def method_settings(config: RunConfig, device: str, console_print=print) -> RunConfig:
    """The config with the fast-path switches train.method cannot use turned off, saying so in one line.

    Prefix and prompt tuning add virtual tokens: packed rows (and the position ids the packed attention reads)
    and the chunked loss over the base's own forward do not see them. QLoRA's base is already 4-bit.
    """
    train = config.train
    changes: dict = {}
    if train.method in VIRTUAL_TOKEN_METHODS:
        changes = {"packing": False, "chunked_loss": False}
    elif train.method == "qlora":
        changes = {"low_precision_base": False}
        if device != "cuda":
            console_print(f"train: qlora on {device}: bitsandbytes' 4-bit kernels are slow off CUDA GPUs; "
                          "lora trains the same adapter faster here")
    switched = [name for name, value in changes.items() if getattr(train, name) != value]
    if switched:
        console_print(f"train: {train.method} is incompatible with {', '.join('train.' + n for n in switched)}; "
                      "switched off for this run")
    if not changes:
        return config
    return config.model_copy(update={"train": train.model_copy(update=changes)})


def peft_config(config: RunConfig, task_type: str, modules_to_save: list[str] | None = None):
    """The PEFT config for train.method (every adapter method); see docs/methods.md."""
    from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, PromptTuningInit

    method, lora = config.train.method, config.train.lora
    if method in ("lora", "dora", "qlora"):
        return LoraConfig(
            r=lora.rank,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            task_type=task_type,
            modules_to_save=modules_to_save,
            use_dora=method == "dora",
            use_rslora=lora.use_rslora,
            init_lora_weights=LORA_INITS[lora.init],
        )
    if method == "ia3":
        # PEFT knows each architecture's IA3 targets (keys, values and the MLP's down projection).
        targets = None if lora.target_modules == "all-linear" else lora.target_modules
        feedforward = None if targets is None else [name for name in targets if "down" in name or "fc2" in name]
        return IA3Config(task_type=task_type, target_modules=targets, feedforward_modules=feedforward,
                         modules_to_save=modules_to_save)
    if method == "prefix":
        return PrefixTuningConfig(task_type=task_type, num_virtual_tokens=lora.virtual_tokens)
    if method == "prompt":
        return PromptTuningConfig(task_type=task_type, num_virtual_tokens=lora.virtual_tokens,
                                  prompt_tuning_init=PromptTuningInit.RANDOM)
    raise ValueError(f"train.method {method!r} trains no adapter")


def wrap_with_adapter(model, config: RunConfig, task_type: str, modules_to_save: list[str] | None = None):
    """The model with train.method's PEFT adapter (LoRA on train.lora.target_modules, DoRA, IA3, prefix or prompt
    tuning); only the adapter (and modules_to_save, e.g. a new classification head) trains."""
    from peft import get_peft_model

    if config.model.adapter:
        return continue_adapter(model, config.model.adapter)
    model = get_peft_model(model, peft_config(config, task_type, modules_to_save))
    if config.train.gradient_checkpointing:
        model.enable_input_require_grads()  # checkpointed adapters need a grad path through frozen embeddings
    return model


def wrap_with_lora(model, config: RunConfig, task_type: str, modules_to_save: list[str] | None = None):
    """The recipes other than SFT: the adapter of train.method (they support lora, dora, ia3), see wrap_with_adapter."""
    check_method_outside_sft(config)
    return wrap_with_adapter(model, config, task_type, modules_to_save)


def check_method_outside_sft(config: RunConfig) -> None:
    """ConfigError for adapter settings only the SFT recipe supports."""
    from tuneloop.errors import ConfigError

    if config.train.method not in ("lora", "dora", "ia3"):
        raise ConfigError(f"train.method: {config.train.method} is supported by the SFT recipe (chat, instruction "
                          "and text data) only; this recipe trains lora, dora, ia3 or full.")
    if config.train.lora.init in BASE_CHANGING_INITS:
        raise ConfigError(f"train.lora.init: {config.train.lora.init} is supported by the SFT recipe only (its "
                          "adapter is converted back for the untouched base when saved); use default or gaussian.")


def lora_config(config: RunConfig, task_type: str, modules_to_save: list[str] | None = None):
    """The PEFT config of train.method for trainers that wrap the model themselves (TRL's DPO, KTO, reward and
    GRPO trainers); the same methods as wrap_with_lora."""
    check_method_outside_sft(config)
    return peft_config(config, task_type, modules_to_save)


def trainer_lora(model, config: RunConfig, task_type: str):
    """(model, peft_config) for TRL trainers that wrap the model themselves: a fresh adapter's config, or, with
    model.adapter, the model already holding that adapter (trainable) and no config. The trainer's reference is
    then the model with the adapter switched off (a fresh adapter), or, with model.adapter, a frozen copy of that
    adapter as loaded (TRL adds it as the adapter "ref"): retraining a served adapter is judged against it."""
    if config.model.adapter:
        return continue_adapter(model, config.model.adapter), None
    return model, lora_config(config, task_type)


def continue_adapter(model, adapter_dir: str):
    """The model with an existing adapter loaded trainable (model.adapter): training continues from it."""
    from pathlib import Path

    from peft import PeftModel

    from tuneloop.errors import ConfigError

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise ConfigError(f"model.adapter: {adapter_dir} holds no adapter_config.json; point it at a run's "
                          "adapter/ directory, or remove the key to train a new adapter.")
    return PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)


REFERENCE_ADAPTER = "ref"  # TRL's name for the frozen copy of a continued adapter that scores the reference


def reference_description(config: RunConfig, lora: bool, precomputed: bool, copy_otherwise: bool = True) -> str:
    """What scores a preference trainer's reference, for its console line."""
    if lora and config.model.adapter:
        return f"the adapter training starts from ({config.model.adapter}), frozen" + (
            ", log-probs computed once" if precomputed else "")
    if lora:
        return "log-probs of the adapter switched off, computed once" if precomputed else "the adapter switched off"
    return "log-probs computed once" if precomputed else "a second copy" if copy_otherwise else "none"


def drop_reference_adapter(model) -> None:
    """Remove the frozen reference copy before saving, so adapter/ holds the trained adapter only."""
    config = getattr(model, "peft_config", None)
    if config and REFERENCE_ADAPTER in config:
        model.delete_adapter(REFERENCE_ADAPTER)
