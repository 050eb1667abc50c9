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

import json
from pathlib import Path

from tuneloop.config import RunConfig
from tuneloop.data.encode import encode_examples
from tuneloop.errors import ConfigError, TuneloopError
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.registry import resolve_model
from tuneloop.recipes.classify import check_known_labels, label_set
from tuneloop.recipes.sft import replace_default_printing, setup_model, setup_tokenizer, trainer_callbacks
from tuneloop.train.arguments import common_training_arguments, uses_adapter
from tuneloop.train.fit import fit, resume_point, training_summary
from tuneloop.workspace import RunDir, read_jsonl, write_json

LABELS_FILE = "classifier_labels.json"
PROMPT = "Classify the text. Answer with exactly one of these labels: {labels}.\n\nText: {text}"
MIN_TEXT_TOKENS = 8


def train_generative_classifier(
    config: RunConfig, run: RunDir, resume: bool = False, console_print=print, tracker=None
) -> dict:
    """Train and save; return the summary also written to train_summary.json."""
    import torch
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
    _save(config, run, trainer, tokenizer, labels)
    summary = training_summary(trainer, result, elapsed, model, config.train.method, device, compute_dtype)
    summary.update(task="classification", labels=len(labels), classifier="generate")
    write_json(run.root / "train_summary.json", summary)
    del trainer, model
    if device == "cuda":
        torch.cuda.empty_cache()
    return summary


def classification_messages(text: str, labels: list[str], label: str) -> list[dict]:
    """The chat example for one row: the question with the label names and the text, answered by `label`."""
    return [
        {"role": "user", "content": PROMPT.format(labels=", ".join(labels), text=text)},
        {"role": "assistant", "content": label},
    ]


def fit_texts(tokenizer, texts: list[str], labels: list[str], max_length: int) -> tuple[list[str], int]:
    """The texts cut (by tokens) so prompt + text + the longest label fit in max_length, and how many were cut.

    Cutting the whole rendered example instead would cut the label, the one thing the model must see.
    """
    longest = max(labels, key=lambda name: len(tokenizer(name, add_special_tokens=False)["input_ids"]))
    frame = tokenizer.apply_chat_template(classification_messages("", labels, longest), tokenize=False)
    frame_tokens = len(tokenizer(frame, add_special_tokens=False)["input_ids"])
    room = max_length - frame_tokens - 2  # a token or two can merge differently at the text's edges
    if room < MIN_TEXT_TOKENS:
        raise ConfigError(
            f"data.max_length={max_length}: the prompt with the {len(labels)} label names and the longest label "
            f"already take {frame_tokens} tokens, leaving no room for the text. Raise data.max_length to at "
            f"least {frame_tokens + 64}, or use train.classifier: head (no label names in the input)."
        )
    fitted, cut = [], 0
    for text, ids in zip(texts, tokenizer(texts, add_special_tokens=False)["input_ids"], strict=True):
        if len(ids) > room:
            text, cut = tokenizer.decode(ids[:room]), cut + 1
        fitted.append(text)
    return fitted, cut


def read_labels(weights: Path) -> list[str]:
    """The label names a generative classifier was trained on, saved beside its weights."""
    path = weights / LABELS_FILE
    if not path.is_file():
        raise TuneloopError(f"{weights}: no {LABELS_FILE}; this is not a generative classifier's output.")
    return json.loads(path.read_text(encoding="utf-8"))["labels"]


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
    trainer.model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))  # carries the chat template the prompts were rendered with
    write_json(target / LABELS_FILE, {"labels": labels, "prompt": PROMPT})
