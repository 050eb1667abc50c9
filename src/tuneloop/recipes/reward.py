"""Reward-model recipe: a scalar head on an encoder (BERT, MiniLM) or a causal LM, trained on preference pairs
with TRL's RewardTrainer (Bradley-Terry loss: -log sigmoid(r(chosen) - r(rejected))).

Reads data/{train,validation}.jsonl (canonical pairs) and writes model/: an
AutoModelForSequenceClassification with num_labels=1 (a LoRA adapter is merged in first, so the
directory stands alone) and its tokenizer with the chat template used in training. Other recipes and
the safety gate load it by run directory with tuneloop.models.reward_scorer.load_reward_scorer.

Features:
    - LoRA (the new head trains in full beside the adapters) or full fine-tuning (train.method).
    - A model without a chat template (an encoder) reads conversations through the plain template
      ("User: ...\\nAssistant: ..."), and says so.
    - Validation loss and pair accuracy on the validation split every train.eval_every steps; early stopping.
    - Checkpoints, Ctrl-C and resume as in recipes/sft.py.

Raises:
    ConfigError: an option that cannot work (a chat template string that is not one).
    TrainingInterrupted: the run was stopped by a signal after saving a checkpoint.
"""

from __future__ import annotations

from tuneloop.config.schema import RunConfig
from tuneloop.data.templates import BUILTIN, apply_template_choice
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.load import load_tokenizer, quiet_transformers
from tuneloop.models.registry import resolve_model
from tuneloop.recipes.preference_data import preference_rows
from tuneloop.train.arguments import common_training_arguments, lora_config, uses_adapter
from tuneloop.train.callbacks import replace_default_printing, trainer_callbacks
from tuneloop.train.fit import finish_training, fit, resume_point, save_trained
from tuneloop.workspace import RunDir


def train_reward_model(config: RunConfig, run: RunDir, resume: bool = False, console_print=print,
                       tracker=None) -> dict:
    """Train the reward model, save model/ (merged) and return the summary written to train_summary.json."""
    import datasets
    import torch
    from datasets import Dataset
    from transformers import AutoModelForSequenceClassification, set_seed
    from trl import RewardConfig, RewardTrainer

    datasets.disable_progress_bars()
    set_seed(config.seed)
    device = pick_device(config.model.device)
    compute_dtype = pick_dtype(device, config.model.dtype)
    base_path = resolve_model(config.model.name, console_print)

    tokenizer = load_tokenizer(base_path)
    if config.data.chat_template == "model" and not getattr(tokenizer, "chat_template", None):
        console_print(f"train: {config.model.name} has no chat template (an encoder?); conversations are read "
                      "through the plain template. Set data.chat_template to choose another.")
        tokenizer.chat_template = BUILTIN["plain"]
        # BERT-style vocabularies: [CLS] opens the text (its vector is what the head reads), [SEP] closes a reply.
        if tokenizer.bos_token is None and tokenizer.cls_token is not None:
            tokenizer.bos_token = tokenizer.cls_token
        if tokenizer.eos_token is None and tokenizer.sep_token is not None:
            tokenizer.eos_token = tokenizer.sep_token
    else:
        apply_template_choice(tokenizer, config.data.chat_template, config.model.name)
    train_dataset = Dataset.from_list(preference_rows(config, run, "train", tokenizer, console_print))
    validation_dataset = Dataset.from_list(preference_rows(config, run, "validation", tokenizer, console_print))

    quiet_transformers()
    model = AutoModelForSequenceClassification.from_pretrained(base_path, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tokenizer.pad_token_id  # the score is read at the last non-padding token
    model.to(device)
    lora = uses_adapter(config.train.method)

    checkpoint = resume_point(run, resume, console_print)
    arguments = common_training_arguments(config, run, device, compute_dtype)
    args = RewardConfig(**arguments, max_length=config.data.max_length)
    trainer = RewardTrainer(
        model=model, args=args, train_dataset=train_dataset, eval_dataset=validation_dataset,
        processing_class=tokenizer, callbacks=trainer_callbacks(config, run, tracker),
        # PEFT's SEQ_CLS task trains the new head (classifier / score) in full beside the adapters.
        peft_config=lora_config(config, "SEQ_CLS") if lora else None,
    )
    replace_default_printing(trainer)
    dropped = len(train_dataset) - len(trainer.train_dataset)
    console_print(
        f"train: reward model ({config.train.method}) on {config.model.name}, {device} "
        f"{str(compute_dtype).removeprefix('torch.')}, {len(trainer.train_dataset)} pairs"
        + (f" ({dropped} longer than data.max_length={config.data.max_length} left out by TRL)" if dropped else "")
        + ", " + (f"{config.train.max_steps} steps" if config.train.max_steps else f"{config.train.epochs:g} epoch(s)")
        + (f", resuming from {checkpoint.name}" if checkpoint else "")
    )
    result, elapsed = fit(trainer, run, checkpoint)
    def save(trained):  # one model/ with any LoRA merged in, and the chat template the scores were trained on
        save_trained(trained.model.merge_and_unload() if lora else trained.model, tokenizer, run.model)

    return finish_training(trainer, tokenizer, config, run, result, elapsed, device, compute_dtype, save=save,
                           recipe="reward", pairs_left_out_too_long=dropped)
