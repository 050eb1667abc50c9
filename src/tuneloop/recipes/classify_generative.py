"""Generative classification recipe: teach a causal LM to answer a text with its label's name (SFT), LoRA or full.

Each {"text", "label"} row becomes a chat example: the user turn asks for one of the label names and
holds the text, the assistant turn is the label. Training is plain SFT on TRL's SFTTrainer (the loss
covers the label and the end-of-turn marker only). Prediction never generates freely: it scores every
label's token sequence after the prompt and takes the most likely one, so the answer is always a valid
label and the softmax over the label scores gives per-class probabilities (see
tuneloop.evaluate.classification_generative). The untuned model choosing among the same label names is
the zero-shot baseline.

Reads data/{train,validation}.jsonl and writes adapter/ (LoRA) or model/ (full) with the tokenizer and
classifier_labels.json (the label names, in order), checkpoints/, train_log.jsonl and train_summary.json.

Features:
    - Any causal LM with a chat template (data.chat_template picks a fallback for base models).
    - Texts longer than data.max_length leave room for the prompt and the longest label: the text is
      cut, never the label (counted and reported).
    - LoRA or full fine-tuning, early stopping on validation loss, checkpoints and resume, as in SFT.

Raises:
    ConfigError: data.max_length leaves no room for the text, or the model has no chat template.
    TuneloopError: a validation label the training split never shows.
    TrainingInterrupted: the run was stopped by a signal after saving a checkpoint.
"""

from __future__ import annotations

from tuneloop.config.schema import RunConfig
from tuneloop.data.classification_prompt import LABELS_FILE, PROMPT, classification_messages, fit_texts
from tuneloop.data.encode import encode_examples
from tuneloop.data.labels import check_known_labels, label_set
from tuneloop.errors import TuneloopError
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.registry import resolve_model
from tuneloop.train.arguments import common_training_arguments, uses_adapter
from tuneloop.train.callbacks import replace_default_printing, trainer_callbacks
from tuneloop.train.fit import finish_training, fit, release_memory, resume_point, save_trained
from tuneloop.train.model_setup import setup_model, setup_tokenizer
from tuneloop.workspace import RunDir, read_jsonl, write_json


def train_generative_classifier(
    config: RunConfig, run: RunDir, resume: bool = False, console_print=print, tracker=None
) -> dict:
    """Train and save; return the summary also written to train_summary.json."""
    from transformers import set_seed
    from trl import SFTTrainer

    set_seed(config.seed)
    device = pick_device(config.model.device)
    compute_dtype = pick_dtype(device, config.model.dtype)
    base_path = resolve_model(config.model.name, console_print)

    train_rows, validation_rows = read_jsonl(run.split("train")), read_jsonl(run.split("validation"))
    labels = label_set(train_rows)
    check_known_labels(validation_rows, labels, "validation")

    tokenizer = setup_tokenizer(config, base_path)
    train_dataset = _encode(config, tokenizer, train_rows, labels, "train", console_print)
    validation_dataset = _encode(config, tokenizer, validation_rows, labels, "validation", console_print)
    model = setup_model(config, base_path, device, compute_dtype)

    checkpoint = resume_point(run, resume, console_print)

    trainer = SFTTrainer(
        model=model,
        args=_training_arguments(config, run, device, compute_dtype),
        train_dataset=train_dataset,
        eval_dataset=validation_dataset,
        processing_class=tokenizer,
        callbacks=trainer_callbacks(config, run, tracker),
    )
    replace_default_printing(trainer)

    console_print(
        f"train: {config.train.method} generative classifier on {config.model.name}, {device} "
        f"{str(compute_dtype).removeprefix('torch.')}, {len(train_dataset)} examples, {len(labels)} labels "
        "(the model learns to write the label)"
        + (f", {config.train.max_steps} steps" if config.train.max_steps else f", {config.train.epochs:g} epoch(s)")
        + (f", resuming from {checkpoint.name}" if checkpoint else "")
    )
    result, elapsed = fit(trainer, run, checkpoint)
    summary = finish_training(trainer, tokenizer, config, run, result, elapsed, device, compute_dtype,
                              save=lambda t: _save(config, run, t, tokenizer, labels), model=model,
                              task="classification", labels=len(labels), classifier="generate")
    del trainer, model
    release_memory(device)
    return summary


def _encode(config: RunConfig, tokenizer, rows: list[dict], labels: list[str], split: str, console_print):
    from datasets import Dataset

    texts, cut = fit_texts(tokenizer, [row["text"] for row in rows], labels, config.data.max_length)
    if cut:
        console_print(f"data: {split}: {cut} of {len(rows)} text(s) were cut to fit data.max_length="
                      f"{config.data.max_length} with the prompt and label. Raise data.max_length to keep them whole.")
    examples = [{"messages": classification_messages(text, labels, row["label"])}
                for text, row in zip(texts, rows, strict=True)]
    encoded, stats = encode_examples(tokenizer, examples, config.data.max_length, config.data.train_on_prompt)
    if stats.dropped_no_target:
        console_print(f"data: {split}: {stats.dropped_no_target} example(s) lost their label to truncation and were "
                      "dropped. Raise data.max_length.")
    if not encoded:
        raise TuneloopError(f"data: no {split} example keeps its label after truncation; raise data.max_length.")
    return Dataset.from_list(encoded)


def _training_arguments(config: RunConfig, run: RunDir, device: str, compute_dtype):
    from trl import SFTConfig

    return SFTConfig(
        **common_training_arguments(config, run, device, compute_dtype),
        max_length=config.data.max_length,
        dataset_kwargs={"skip_prepare_dataset": True},  # encoded here, labels masked by tuneloop.data.encode
        remove_unused_columns=False,
    )


def _save(config: RunConfig, run: RunDir, trainer, tokenizer, labels: list[str]) -> None:
    target = run.adapter if uses_adapter(config.train.method) else run.model
    save_trained(trainer.model, tokenizer, target)  # with the chat template the prompts were rendered with
    write_json(target / LABELS_FILE, {"labels": labels, "prompt": PROMPT})
