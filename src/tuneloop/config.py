"""The run config: a typed schema split by stage, read from YAML, overridable with `--set key=value`.

Every problem is reported at once, each naming the key, the value given and what is allowed.
Relative paths are resolved against the current working directory, like any command-line tool.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal, NoReturn

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tuneloop.data.formats import DEFAULT_SUMMARY_INSTRUCTION
from tuneloop.errors import ConfigError


class _Section(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelConfig(_Section):
    """Which model to start from and where it runs."""

    name: str = Field("smollm2-135m-instruct", description="Registry name, local HF directory, .gguf file or hub id.")
    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="Compute dtype; auto picks bf16 where the hardware runs it fast, else fp32."
    )
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"


AUDIT_CHECKS = ("duplicates", "leakage", "pii", "lengths", "labels", "language", "bias", "preference")


class AuditConfig(_Section):
    """The data audit that opens every run; a limit set here stops the run when the data exceeds it."""

    enabled: bool = True
    near_threshold: float = Field(0.8, gt=0, le=1, description="Jaccard similarity (5-grams) for near copies.")
    expected_language: str = Field("en", description="ISO 639-1 code rows are expected to be in.")
    checks: list[str] = Field(list(AUDIT_CHECKS))
    max_leaked_rows: int | None = Field(
        None, ge=0, description="Stop when more evaluation rows than this copy a training row (0: any leak stops)."
    )
    max_duplicate_rows: int | None = Field(None, ge=0, description="Stop when more training rows repeat a row.")
    max_pii_rows: int | None = Field(None, ge=0, description="Stop when more rows than this hold personal data.")

    @field_validator("checks")
    @classmethod
    def _known_checks(cls, names: list[str]) -> list[str]:
        unknown = [n for n in names if n not in AUDIT_CHECKS]
        if unknown:
            raise ValueError(f"unknown check(s) {unknown}; allowed: {list(AUDIT_CHECKS)}")
        return names


class DataConfig(_Section):
    """Where the examples come from and how they become tokens."""

    @model_validator(mode="after")
    def _one_test_source(self) -> DataConfig:
        if self.test_file and self.test_size:
            raise ValueError("set data.test_file or data.test_size, not both")
        return self

    train_file: str = Field(
        ..., description="Training examples: jsonl, json, csv, tsv, parquet, txt (documents) or CoNLL columns."
    )
    validation_file: str | None = Field(None, description="Held-out rows for validation loss and early stopping.")
    test_file: str | None = Field(None, description="Held-out rows scored by generation (never trained on).")
    format: Literal[
        "auto", "chat", "alpaca", "prompt_completion", "preference", "summarization", "classification",
        "token_classification", "text",
    ] = "auto"
    summary_instruction: str = Field(
        DEFAULT_SUMMARY_INSTRUCTION,
        description="Summarization data: the request put before each document in the user turn ('' for none).",
    )
    validation_size: float = Field(0.1, gt=0.0, lt=1.0, description="Share of train split off when no validation_file.")
    test_size: float | None = Field(
        None, gt=0.0, lt=1.0, description="Without a test_file: share of train held out for testing, with "
        "near-duplicate clusters kept on one side."
    )
    max_train_examples: int | None = Field(None, ge=2, description="Train on a seeded sample of this many examples.")
    max_validation_examples: int | None = Field(
        None, ge=1, description="Validate on a seeded sample of this many examples (each evaluation reads them all)."
    )
    max_length: int = Field(512, ge=8, description="Longer examples are truncated (and counted).")
    chat_template: str = Field(
        "model", description="'model' (the tokenizer's own), 'chatml', 'plain', or a Jinja template string."
    )
    train_on_prompt: bool = Field(False, description="Also compute the loss on prompt tokens.")
    skip_invalid: bool = Field(False, description="Skip malformed rows (and report how many) instead of stopping.")
    audit: AuditConfig = AuditConfig()


class LoraConfig(_Section):
    rank: int = Field(16, ge=1)
    alpha: int = Field(32, ge=1)
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="Dropout on each adapter's input. 0 by default: every LoRA layer with dropout "
        "keeps its own dropped copy of its input, which measured 1.5x slower and +0.9 GB here (docs/performance.md)."
    )
    target_modules: str | list[str] = Field("all-linear", description="'all-linear' or a list of module names.")
    use_rslora: bool = Field(False, description="Rank-stabilized LoRA: scale by alpha/sqrt(rank), not alpha/rank.")
    init: Literal["default", "gaussian", "pissa", "olora", "orthogonal"] = Field(
        "default", description="How adapters start (PEFT init_lora_weights): default (B = 0), gaussian, pissa or "
        "olora (from the base weights' SVD / QR, converted back to a plain adapter when saved), orthogonal."
    )
    virtual_tokens: int = Field(20, ge=1, description="train.method prefix or prompt: learned tokens put in front.")


class TrainConfig(_Section):
    """How the model is trained."""

    method: Literal["lora", "dora", "qlora", "ia3", "prefix", "prompt", "full"] = Field(
        "lora", description="lora; dora (weight-decomposed LoRA); qlora (LoRA on a 4-bit NF4 base, bitsandbytes); "
        "ia3 (learned rescaling vectors); prefix / prompt (learned virtual tokens); full (every weight). "
        "See docs/methods.md."
    )
    epochs: float = Field(3.0, gt=0)
    max_steps: int | None = Field(None, ge=1, description="Stop after this many optimizer steps (overrides epochs).")
    learning_rate: float = Field(2e-4, gt=0, lt=1)
    batch_size: int = Field(8, ge=1)
    gradient_accumulation: int = Field(1, ge=1)
    warmup_ratio: float = Field(0.05, ge=0, lt=1)
    weight_decay: float = Field(0.0, ge=0)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    max_grad_norm: float = Field(1.0, gt=0)
    gradient_checkpointing: bool = Field(
        False, description="Recompute activations in backward: less memory, about 30% slower."
    )
    packing: bool = Field(
        True, description="SFT: run each batch's examples back to back in one row (no padding tokens; attention "
        "stays within each example)."
    )
    chunked_loss: bool = Field(
        True, description="SFT: compute the loss on target tokens only, in chunks, never holding the full logits."
    )
    low_precision_base: bool = Field(
        True, description="SFT with LoRA: keep the frozen base weights in the compute dtype (bf16) rather than fp32; "
        "the adapters keep fp32 weights."
    )
    lean_activations: bool = Field(
        True, description="SFT: RMSNorms and gated MLPs (SwiGLU/GeGLU) recompute their cheap elementwise results in "
        "backward instead of keeping them (less memory, same result; no matmul is recomputed)."
    )
    trim_memory_every: int | None = Field(
        1, ge=1, description="Training on Linux: every this many steps, hand memory the C allocator holds free back "
        "to the OS (peak RSS about 18% lower on a CPU, about 8% slower); null disables."
    )
    eval_every: int = Field(50, ge=1, description="Steps between validation-loss evaluations.")
    save_every: int = Field(50, ge=1, description="Steps between checkpoints.")
    save_total_limit: int = Field(2, ge=1)
    early_stopping_patience: int | None = Field(
        3, ge=1, description="Stop after this many evaluations without improvement; null disables."
    )
    logging_steps: int = Field(5, ge=1)
    class_weights: bool = Field(
        False, description="Classification only: weight the loss by inverse class frequency (for imbalanced labels)."
    )
    classifier: Literal["auto", "head", "generate"] = Field(
        "auto", description="Classification only: 'head' trains a classification head (encoders and causal LMs); "
        "'generate' trains a causal LM to write the label name and predicts by scoring each label; auto = head."
    )
    preset: Literal["auto", "few_shot", "none"] = Field(
        "auto", description="'few_shot': safer settings for tiny data and k-fold cross-validation to pick the "
        "epochs (see tuneloop.train.few_shot); auto = few_shot when the training split has under 100 rows."
    )
    lora: LoraConfig = LoraConfig()


GENERATION_METRICS = ("exact_match", "contains_answer", "rouge_1", "rouge_2", "rouge_l", "bleu", "chrf", "token_f1")
DEFAULT_GENERATION_METRICS = ("exact_match", "contains_answer", "rouge_l", "bleu", "chrf", "token_f1")
# A summary is never an exact match: overlap of words (ROUGE-1), word pairs (ROUGE-2) and order (ROUGE-L) is.
SUMMARIZATION_METRICS = ("rouge_1", "rouge_2", "rouge_l", "bleu", "chrf")


class EvaluateConfig(_Section):
    """How the tuned model and its untuned baseline are scored."""

    baseline: bool = Field(True, description="Score the untuned model on the same rows.")
    max_samples: int = Field(200, ge=1, description="Held-out rows scored by generation.")
    max_new_tokens: int = Field(64, ge=1)
    batch_size: int = Field(16, ge=1)
    metrics: list[str] | None = Field(
        None, description="Generation metrics; null picks by data format: ROUGE-1/2/L, BLEU and chrF for "
        "summarization, else exact_match, contains_answer, ROUGE-L, BLEU, chrF and token F1."
    )
    intervals: bool = Field(True, description="95% bootstrap intervals and a paired baseline-vs-tuned test.")
    forgetting: list[str] = Field(
        default_factory=list, description="Multiple-choice files (ARC, HellaSwag, PIQA or {question, choices, answer})"
        " scored on base and tuned model to catch forgetting."
    )
    forgetting_format: Literal["auto", "arc", "hellaswag", "piqa", "mc"] = "auto"
    forgetting_limit: int | None = Field(None, ge=1, description="Questions per forgetting file (all when null).")
    max_forgetting: float | None = Field(
        None, ge=0, description="Points of accuracy the tuned model may lose on a forgetting file; more fails the run."
    )
    general_text: list[str] = Field(
        default_factory=list, description="General-text files (.txt, or jsonl/csv rows of any format) whose perplexity "
        "is measured on base and tuned model: a rise shows forgetting of general language."
    )
    max_perplexity_tokens: int | None = Field(
        100_000, ge=1, description="Tokens scored per perplexity set (held-out domain text, general text), from the "
        "start; null: all."
    )

    @field_validator("metrics")
    @classmethod
    def _known_metrics(cls, names: list[str] | None) -> list[str] | None:
        unknown = [n for n in names or [] if n not in GENERATION_METRICS]
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; allowed: {list(GENERATION_METRICS)}")
        return names


def generation_metrics(evaluate: EvaluateConfig, data_format: str | None) -> list[str]:
    """The metrics a generative run is scored with: the configured list, else the default for its data format."""
    if evaluate.metrics is not None:
        return evaluate.metrics
    return list(SUMMARIZATION_METRICS if data_format == "summarization" else DEFAULT_GENERATION_METRICS)


class TrackingConfig(_Section):
    """Where runs are tracked: MLflow (a local SQLite store beside the run directories by default), W&B, or none."""

    backend: Literal["mlflow", "wandb", "none"] = "mlflow"
    uri: str | None = Field(
        None, description="MLflow tracking URI; default sqlite:///<output_dir's parent>/mlflow.db (see `mlflow ui`)."
    )
    experiment: str = "tuneloop"
    wandb_mode: Literal["offline", "online"] = Field("offline", description="W&B works without a network offline.")


class RunConfig(_Section):
    """One run: a model, its data, how to train and how to evaluate; outputs land in output_dir."""

    output_dir: str = Field("runs/run", description="The run directory; everything the run writes lands here.")
    seed: int = 42
    model: ModelConfig = ModelConfig()
    data: DataConfig
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tracking: TrackingConfig = TrackingConfig()


def load_config(path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None) -> RunConfig:
    """Read a YAML config, apply `key.path=value` overrides and validate; raise ConfigError listing every problem."""
    raw, source = read_config(path, overrides, base)
    return validate_config(raw, source)


def read_config(
    path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None
) -> tuple[dict[str, Any], str]:
    """The raw config mapping (YAML with overrides applied, not yet validated) and where it came from."""
    raw: dict[str, Any] = dict(base or {})
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file. Create one with `tuneloop init {path}`.")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)}).") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a UTF-8 text file; a config is YAML text.") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections (model:, data:, train:, ...).")
        raw.update(loaded)
    for item in overrides or []:
        apply_override(raw, item)
    return raw, source


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (so 1e-4, true, [a, b] work)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.learning_rate=1e-4")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        if isinstance(node, list):  # stages.1.train.epochs or stages.assistant.train.epochs
            node = _list_item(node, part, item)
            continue
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict | list):
            raise ConfigError(f"--set {item!r}: '{part}' is a value, not a section.")
        node = child
    if isinstance(node, list):
        raise ConfigError(f"--set {item!r}: set a key inside a list item, e.g. --set stages.0.train.epochs=2")
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError:
        node[parts[-1]] = value


def _list_item(items: list, part: str, item: str) -> dict:
    found = [entry for index, entry in enumerate(items)
             if isinstance(entry, dict) and (str(index) == part or entry.get("name") == part)]
    if not found:
        raise ConfigError(f"--set {item!r}: no list item '{part}' (give its index from 0, or a stage name).")
    return found[0]


def validate_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    if "stages" in raw:
        raise ConfigError(f"{source}: lists stages (a multi-stage run), and this command takes one stage. Run the "
                          f"stages with `tuneloop run {source}`, or point the command at one stage's run directory.")
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise_problems([describe_error(err) for err in exc.errors()], source)


def raise_problems(problems: list[str], source: str) -> NoReturn:
    listed = "\n".join(f"  - {problem}" for problem in problems)
    raise ConfigError(f"{source}: {len(problems)} problem(s):\n{listed}") from None


# Names other tools use for our keys, so the hint points at the right one.
KNOWN_ALIASES = {
    "lr": "learning_rate",
    "num_epochs": "epochs",
    "num_train_epochs": "epochs",
    "per_device_train_batch_size": "batch_size",
    "micro_batch_size": "batch_size",
    "gradient_accumulation_steps": "gradient_accumulation",
    "r": "rank",
    "lora_r": "rank",
    "lora_alpha": "alpha",
    "lora_dropout": "dropout",
    "model_name": "name",
    "sequence_len": "max_length",
    "max_seq_length": "max_length",
}


def describe_error(err: dict[str, Any], prefix: str = "") -> str:
    """One pydantic error as 'key: problem (got value).'; prefix places the key, e.g. 'stages[1].'."""
    loc = [str(p) for p in err["loc"]]
    key = prefix + ".".join(loc) if loc else prefix.rstrip(".") or "(top level)"
    if err["type"] == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        close = [KNOWN_ALIASES[loc[-1]]] if KNOWN_ALIASES.get(loc[-1]) in allowed else []
        close = close or difflib.get_close_matches(loc[-1], allowed, n=1)
        hint = f" Did you mean '{prefix}{'.'.join(loc[:-1] + close)}'?" if close else ""
        return f"{key}: unknown key.{hint} Allowed here: {', '.join(allowed)}."
    if err["type"] == "missing":
        return f"{key}: required but missing."
    message = err["msg"].removeprefix("Value error, ")
    shown = err.get("input")
    return f"{key}: {message}." if isinstance(shown, dict) else f"{key}: {message} (got {shown!r})."


def _fields_at(loc: list[str]) -> list[str]:
    model: type[BaseModel] = RunConfig
    for part in loc:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def config_to_yaml(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
