"""Classification recipe: fine-tune an encoder or a causal LM with a sequence-classification head, LoRA or full.

Reads data/{train,validation}.jsonl ({"text", "label"} rows written by the data stage) and writes
adapter/ (LoRA) or model/ (full), checkpoints/, train_log.jsonl and train_summary.json into the run
directory. The label names travel in the model config (id2label / label2id), so an exported model
predicts names, not numbers.

Features:
    - Any HF encoder directory, the `minilm-l6` registry default included; the head is new and trained.
    - Causal LMs too (Llama, Gemma, `smollm2-135m-instruct`, ...): AutoModelForSequenceClassification puts
      a `score` head on the last non-padding token, so the model config gets the tokenizer's pad_token_id.
      (train.classifier: generate instead teaches the LM to write the label: recipes/classify_generative.py.)
    - Multi-class rows (one label) with cross-entropy; multi-label rows (a list of labels) with a
      sigmoid per label (problem_type="multi_label_classification", threshold 0.5 at prediction).
    - train.class_weights: weight the loss by inverse class frequency for imbalanced labels.
    - LoRA (task type SEQ_CLS; the classifier head is trained in full via modules_to_save) or full
      fine-tuning (train.method).
    - Truncation at data.max_length (counted and reported) and dynamic padding per batch.
    - Device picked automatically (cuda, mps, cpu); bf16 autocast where the hardware runs it fast.
    - Validation loss every train.eval_every steps; early stopping on it; the best weights are kept.
    - Checkpoints every train.save_every steps; Ctrl-C or SIGTERM saves one and stops; `resume=True`
      continues from the newest checkpoint.

Raises:
    TuneloopError: a validation label the training split never shows (the head has no output for it).
    ConfigError: train.classifier names a variant the model or data cannot use (see check_classifier_choice).
    TrainingInterrupted: the run was stopped by a signal after saving a checkpoint.
"""

from __future__ import annotations

from collections import Counter

from tuneloop.config.schema import RunConfig
from tuneloop.data.labels import check_known_labels, is_multi_label, label_set, row_labels
from tuneloop.errors import ConfigError
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.load import is_causal_lm, load_tokenizer, quiet_transformers
from tuneloop.models.registry import resolve_model
from tuneloop.train.arguments import common_training_arguments, uses_adapter, wrap_with_lora
from tuneloop.train.callbacks import replace_default_printing, trainer_callbacks
from tuneloop.train.fit import finish_training, fit, release_memory, resume_point
from tuneloop.workspace import RunDir, read_jsonl

# The usual names of a classification head; PEFT trains these in full next to the LoRA layers.
HEAD_NAMES = ["classifier", "score"]


def train_classifier(config: RunConfig, run: RunDir, resume: bool = False, console_print=print, tracker=None) -> dict:
    """Train and save; return the summary also written to train_summary.json."""
    from transformers import DataCollatorWithPadding, Trainer, set_seed

    set_seed(config.seed)
    device = pick_device(config.model.device)
    compute_dtype = pick_dtype(device, config.model.dtype)
    base_path = resolve_model(config.model.name, console_print)

    train_rows, validation_rows = read_jsonl(run.split("train")), read_jsonl(run.split("validation"))
    labels = label_set(train_rows)
    multi_label = is_multi_label(train_rows)
    check_known_labels(validation_rows, labels, "validation")

    tokenizer = load_tokenizer(base_path)
    train_dataset = _encode(tokenizer, train_rows, labels, multi_label, config.data.max_length, "train", console_print)
    validation_dataset = _encode(
        tokenizer, validation_rows, labels, multi_label, config.data.max_length, "validation", console_print
    )
    # A causal LM's head reads the last non-padding token, so it must know which token pads.
    pad_token_id = tokenizer.pad_token_id if is_causal_lm(base_path) else None
    model = setup_model(config, base_path, labels, multi_label, device, pad_token_id)

    checkpoint = resume_point(run, resume, console_print)

    weights = class_weights(train_rows, labels, multi_label) if config.train.class_weights else None
    trainer = Trainer(
        model=model,
        args=_training_arguments(config, run, device, compute_dtype),
        train_dataset=train_dataset,
        eval_dataset=validation_dataset,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        callbacks=trainer_callbacks(config, run, tracker),
        compute_loss_func=weighted_loss(weights, multi_label) if weights is not None else None,
    )
    replace_default_printing(trainer)
    # Encoders take **kwargs, so Trainer assumes they scale the loss for gradient accumulation themselves; they
    # return a per-batch mean, so Trainer must divide by the accumulation steps.
    trainer.model_accepts_loss_kwargs = False

    console_print(
        f"train: {config.train.method} classifier on {config.model.name}, {device} "
        f"{str(compute_dtype).removeprefix('torch.')}, {len(train_dataset)} examples, {len(labels)} labels"
        + (" (multi-label)" if multi_label else "")
        + (", class-weighted loss" if weights is not None else "")
        + (f", {config.train.max_steps} steps" if config.train.max_steps else f", {config.train.epochs:g} epoch(s)")
        + (f", resuming from {checkpoint.name}" if checkpoint else "")
    )
    result, elapsed = fit(trainer, run, checkpoint)
    summary = finish_training(trainer, tokenizer, config, run, result, elapsed, device, compute_dtype,
                              save=lambda t: save_classifier(config, run, t, tokenizer), model=model,
                              task="multi-label classification" if multi_label else "classification",
                              labels=len(labels), class_weights=config.train.class_weights, classifier="head")
    del trainer, model
    release_memory(device)
    return summary


def check_classifier_choice(config: RunConfig, base_path: str, multi_label: bool) -> str:
    """The classifier variant a classification run trains ('head' or 'generate'); ConfigError for a combination
    that cannot work. auto means head, for encoders and causal LMs alike."""
    choice = "generate" if config.train.classifier == "generate" else "head"
    if choice == "head":
        return choice
    problems = []
    if not is_causal_lm(base_path):
        problems.append(f"model.name={config.model.name!r} is an encoder, which cannot write a label; use "
                        "train.classifier: head (or auto), or a causal LM such as smollm2-135m-instruct")
    if multi_label:
        problems.append("the data is multi-label (rows with a list of labels); the generate variant picks exactly "
                        "one label per text: use train.classifier: head (a sigmoid per label)")
    if config.train.class_weights:
        problems.append("train.class_weights weights a head's loss; set it to false with the generate variant, or "
                        "use train.classifier: head")
    if problems:
        raise ConfigError("train.classifier='generate' cannot be used here: " + "; ".join(problems) + ".")
    return choice


def class_weights(rows: list[dict], labels: list[str], multi_label: bool) -> list[float]:
    """Inverse class frequency, n / (classes * count): a balanced dataset gets 1.0 for every class.

    Multi-label rows get a positive weight per label instead, negatives / positives, as
    BCEWithLogitsLoss's pos_weight expects.
    """
    counts = Counter(label for row in rows for label in row_labels(row))
    if multi_label:
        return [(len(rows) - counts[label]) / counts[label] for label in labels]
    return [len(rows) / (len(labels) * counts[label]) for label in labels]


def weighted_loss(weights: list[float], multi_label: bool):
    """A Trainer compute_loss_func: weighted cross-entropy (or BCE with pos_weight for multi-label).

    The Trainer passes the number of labelled items in the whole accumulated batch while training; the
    sum over this micro-batch divided by it keeps gradient accumulation exact. In evaluation it is None.
    """
    import torch

    def loss(outputs, labels, num_items_in_batch=None):
        logits = outputs.logits.float()  # autocast may hand back bf16 logits; the loss wants full precision
        weight = torch.tensor(weights, device=logits.device)
        if multi_label:
            per_item = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, labels.float(), pos_weight=weight, reduction="none"
            )
        else:
            per_item = torch.nn.functional.cross_entropy(logits, labels, weight=weight, reduction="none")
        if num_items_in_batch is None:
            return per_item.mean()
        return per_item.sum() / num_items_in_batch

    return loss


def _encode(tokenizer, rows: list[dict], labels: list[str], multi_label: bool, max_length: int, split: str,
            console_print):
    from datasets import Dataset

    index = {label: i for i, label in enumerate(labels)}
    encoded = tokenizer([row["text"] for row in rows], truncation=True, max_length=max_length)
    untruncated = tokenizer([row["text"] for row in rows])["input_ids"]
    truncated = sum(1 for ids in untruncated if len(ids) > max_length)
    if truncated:
        console_print(f"data: {split}: {truncated} of {len(rows)} text(s) longer than data.max_length={max_length} "
                      "were truncated. Raise data.max_length to keep them whole.")
    if multi_label:
        targets = [[1.0 if label in row_labels(row) else 0.0 for label in labels] for row in rows]
    else:
        targets = [index[row["label"]] for row in rows]
    return Dataset.from_dict({**encoded, "labels": targets})


def setup_model(config: RunConfig, base_path: str, labels: list[str], multi_label: bool, device: str,
                pad_token_id: int | None = None):
    """The model with a fresh head of one output per label; LoRA-wrapped when train.method is lora.

    pad_token_id (causal LMs) goes into the model config, which is saved with the weights and the export.
    """
    import torch
    from transformers import AutoModelForSequenceClassification

    quiet_transformers()  # the "newly initialized classifier" notice is expected: the head is what we train
    # Weights stay fp32 (the optimizer's master copy); autocast runs the matmuls in the compute dtype.
    model = AutoModelForSequenceClassification.from_pretrained(
        base_path,
        dtype=torch.float32,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
        problem_type="multi_label_classification" if multi_label else "single_label_classification",
        ignore_mismatched_sizes=True,  # a base that is itself a classifier with other labels gets a fresh head
        **({"pad_token_id": pad_token_id} if pad_token_id is not None else {}),
    ).to(device)
    if pad_token_id is not None:
        model.config.use_cache = False  # a causal LM's KV cache is useless in training and costs memory
    if config.train.method == "full":
        return model
    return wrap_with_lora(model, config, "SEQ_CLS", modules_to_save=HEAD_NAMES)


def _training_arguments(config: RunConfig, run: RunDir, device: str, compute_dtype):
    from transformers import TrainingArguments

    return TrainingArguments(
        **common_training_arguments(config, run, device, compute_dtype) | {
            "per_device_eval_batch_size": config.evaluate.batch_size,
        },
        label_names=["labels"],
    )


def save_classifier(config: RunConfig, run: RunDir, trainer, tokenizer) -> None:
    """adapter/ or model/ with the tokenizer; for LoRA also the config that rebuilds the head (text or token labels)."""
    target = run.adapter if uses_adapter(config.train.method) else run.model
    trainer.model.save_pretrained(str(target))
    if uses_adapter(config.train.method):
        # The adapter alone does not say how many outputs the head has or what they are called; the
        # classification config (id2label, problem_type) beside it rebuilds the right model on load.
        trainer.model.base_model.model.config.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
