"""Token-classification recipe (named-entity recognition): fine-tune an encoder with a tag per word, LoRA or full.

Reads data/{train,validation}.jsonl ({"tokens", "tags"} rows in IOB2, written by the data stage) and
writes adapter/ (LoRA) or model/ (full), checkpoints/, train_log.jsonl and train_summary.json into the
run directory. The tag names travel in the model config (id2label / label2id), so an exported model
predicts B-PER, not 3.

Features:
    - Any HF encoder with a fast tokenizer, the `minilm-l6` registry default included; the tagging
      head is new and trained.
    - Sub-word alignment: the words are tokenized as given (is_split_into_words); the first sub-word
      of each word carries the word's tag and the other sub-words are ignored by the loss (-100), so
      predictions map back to words one to one.
    - The tag set is O plus B- and I- for every entity type the training split shows, so a type whose
      I- tag training happens never to show can still be predicted.
    - Loss: cross-entropy over the labelled sub-words of the whole accumulated batch (exact under
      gradient accumulation).
    - LoRA (task type TOKEN_CLS; the head is trained in full via modules_to_save) or full fine-tuning.
    - Truncation at data.max_length: sentences and words cut are counted and reported; batches group
      sentences of similar length (less padding).
    - Device picked automatically (cuda, mps, cpu); bf16 autocast where the hardware runs it fast.
    - Validation loss every train.eval_every steps; early stopping on it; the best weights are kept.
    - Checkpoints every train.save_every steps; Ctrl-C or SIGTERM saves one and stops; `resume=True`
      continues from the newest checkpoint. A progress bar with ETA, loss and tokens per second.

Raises:
    ConfigError: train.class_weights (sequence classification only).
    ModelError: the model has no fast tokenizer (word alignment needs its word_ids).
    TuneloopError: a validation entity type the training split never shows.
    TrainingInterrupted: the run was stopped by a signal after saving a checkpoint.
"""

from __future__ import annotations

from dataclasses import dataclass

from tuneloop.config.schema import RunConfig
from tuneloop.data.iob import OUTSIDE
from tuneloop.data.labels import check_known_types
from tuneloop.errors import ConfigError, ModelError
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.load import load_tokenizer, quiet_transformers
from tuneloop.models.registry import resolve_model
from tuneloop.recipes.classify import HEAD_NAMES, save_classifier
from tuneloop.train.arguments import common_training_arguments, wrap_with_lora
from tuneloop.train.callbacks import replace_default_printing, trainer_callbacks
from tuneloop.train.fit import finish_training, fit, release_memory, resume_point
from tuneloop.workspace import RunDir, read_jsonl

IGNORED = -100  # the label of sub-words the loss skips (continuations, [CLS], [SEP], padding)


@dataclass
class Truncation:
    """What data.max_length cut from one split."""

    sentences: int = 0
    cut_sentences: int = 0  # sentences that lost at least one word
    cut_words: int = 0  # words with no sub-word left (no prediction: they count as O)


def train_token_classifier(config: RunConfig, run: RunDir, resume: bool = False, console_print=print,
                           tracker=None) -> dict:
    """Train and save; return the summary also written to train_summary.json."""
    from transformers import DataCollatorForTokenClassification, Trainer, set_seed

    if config.train.class_weights:
        raise ConfigError("train.class_weights: weights per class apply to sequence classification only; "
                          "set it to false for token classification (NER) data.")
    set_seed(config.seed)
    device = pick_device(config.model.device)
    compute_dtype = pick_dtype(device, config.model.dtype)
    base_path = resolve_model(config.model.name, console_print)

    train_rows, validation_rows = read_jsonl(run.split("train")), read_jsonl(run.split("validation"))
    tags = tag_set(train_rows)
    check_known_types(validation_rows, tags, "validation")

    tokenizer = load_word_tokenizer(base_path)
    tag_ids = {tag: i for i, tag in enumerate(tags)}
    train_dataset = _encode(tokenizer, train_rows, tag_ids, config.data.max_length, "train", console_print)
    validation_dataset = _encode(tokenizer, validation_rows, tag_ids, config.data.max_length, "validation",
                                 console_print)
    model = setup_model(config, base_path, tags, device)

    checkpoint = resume_point(run, resume, console_print)

    trainer = Trainer(
        model=model,
        args=_training_arguments(config, run, device, compute_dtype),
        train_dataset=train_dataset,
        eval_dataset=validation_dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORED),
        callbacks=trainer_callbacks(config, run, tracker),
        compute_loss_func=token_loss,
    )
    replace_default_printing(trainer)

    types = sorted({tag[2:] for tag in tags if tag != OUTSIDE})
    console_print(
        f"train: {config.train.method} token classifier on {config.model.name}, {device} "
        f"{str(compute_dtype).removeprefix('torch.')}, {len(train_dataset)} sentences, {len(tags)} tags "
        f"({', '.join(types)})"
        + (f", {config.train.max_steps} steps" if config.train.max_steps else f", {config.train.epochs:g} epoch(s)")
        + (f", resuming from {checkpoint.name}" if checkpoint else "")
    )
    result, elapsed = fit(trainer, run, checkpoint)
    summary = finish_training(trainer, tokenizer, config, run, result, elapsed, device, compute_dtype,
                              save=lambda t: save_classifier(config, run, t, tokenizer), model=model,
                              task="token classification", labels=len(tags), entity_types=types)
    del trainer, model
    release_memory(device)
    return summary


def tag_set(rows: list[dict]) -> list[str]:
    """O, then B- and I- of every entity type the rows show, by type: the order of the head's outputs."""
    types = sorted({tag[2:] for row in rows for tag in row["tags"] if tag != OUTSIDE})
    return [OUTSIDE] + [f"{prefix}-{kind}" for kind in types for prefix in ("B", "I")]


def load_word_tokenizer(path: str):
    """The model's fast tokenizer, set up for text already split into words."""
    tokenizer = load_tokenizer(path)
    if not tokenizer.is_fast:
        raise ModelError(f"{path}: token classification needs a fast tokenizer (it maps sub-words back to words "
                         "with word_ids), and this model has only a slow one. Choose another encoder.")
    if getattr(tokenizer, "add_prefix_space", None) is False:
        # Byte-level BPE (RoBERTa, GPT-2) marks a word start by a leading space; words given one by one need it.
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(path, add_prefix_space=True)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token  # as load_tokenizer does: padding is masked anyway
    return tokenizer


def aligned_labels(word_ids: list[int | None], word_tags: list[int]) -> list[int]:
    """One label per sub-word: the word's tag on its first sub-word, IGNORED on the rest and on special tokens."""
    labels, previous = [], None
    for word in word_ids:
        labels.append(IGNORED if word is None or word == previous else word_tags[word])
        previous = word
    return labels


def token_loss(outputs, labels, num_items_in_batch=None):
    """Cross-entropy summed over the labelled sub-words, divided by their count in the whole accumulated batch
    (the Trainer passes it while training; in evaluation it is None and this is the mean)."""
    import torch

    logits = outputs.logits.float()  # autocast may hand back bf16 logits; the loss wants full precision
    summed = torch.nn.functional.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=IGNORED,
                                               reduction="sum")
    count = num_items_in_batch if num_items_in_batch is not None else labels.ne(IGNORED).sum().clamp(min=1)
    return summed / count


def encode_words(tokenizer, rows: list[dict], tag_ids: dict[str, int], max_length: int) -> tuple[dict, Truncation]:
    """Tokenize sentences given as words; labels aligned to sub-words; what truncation cut."""
    encoded = tokenizer([row["tokens"] for row in rows], is_split_into_words=True, truncation=True,
                        max_length=max_length)
    labels, truncation = [], Truncation(sentences=len(rows))
    for index, row in enumerate(rows):
        word_ids = encoded.word_ids(index)
        labels.append(aligned_labels(word_ids, [tag_ids[tag] for tag in row["tags"]]))
        missing = len(row["tokens"]) - len({word for word in word_ids if word is not None})
        if missing:
            truncation.cut_sentences += 1
            truncation.cut_words += missing
    return {**encoded, "labels": labels}, truncation


def _encode(tokenizer, rows: list[dict], tag_ids: dict[str, int], max_length: int, split: str, console_print):
    from datasets import Dataset

    encoded, truncation = encode_words(tokenizer, rows, tag_ids, max_length)
    if truncation.cut_sentences:
        console_print(
            f"data: {split}: {truncation.cut_sentences} of {truncation.sentences} sentence(s) lost "
            f"{truncation.cut_words} word(s) to data.max_length={max_length} (or words the tokenizer turns into "
            "no token); those words are not trained on. Raise data.max_length to keep them."
        )
    return Dataset.from_dict(encoded)


def setup_model(config: RunConfig, base_path: str, tags: list[str], device: str):
    """The encoder with a fresh head of one output per tag; LoRA-wrapped when train.method is lora."""
    import torch
    from transformers import AutoModelForTokenClassification

    quiet_transformers()  # the "newly initialized classifier" notice is expected: the head is what we train
    # Weights stay fp32 (the optimizer's master copy); autocast runs the matmuls in the compute dtype.
    model = AutoModelForTokenClassification.from_pretrained(
        base_path,
        dtype=torch.float32,
        num_labels=len(tags),
        id2label=dict(enumerate(tags)),
        label2id={tag: i for i, tag in enumerate(tags)},
        ignore_mismatched_sizes=True,  # a base that is itself a tagger with other tags gets a fresh head
    ).to(device)
    if config.train.method == "full":
        return model
    return wrap_with_lora(model, config, "TOKEN_CLS", modules_to_save=HEAD_NAMES)


def _training_arguments(config: RunConfig, run: RunDir, device: str, compute_dtype):
    from transformers import TrainingArguments

    return TrainingArguments(
        **common_training_arguments(config, run, device, compute_dtype) | {
            "per_device_eval_batch_size": config.evaluate.batch_size,
            # Sentence lengths vary from one word to a hundred: batching similar lengths (still shuffled)
            # avoids most of the padding, which costs as much compute as real tokens.
            "train_sampling_strategy": "group_by_length",
        },
        label_names=["labels"],
    )

