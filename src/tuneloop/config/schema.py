"""The run config's schema: one typed section per stage, and each validation problem worded for people.

Every problem names the key, the value given and what is allowed (describe_error). Relative paths are
resolved against the current working directory, like any command-line tool.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tuneloop.config.guard import GuardConfig

DEFAULT_SUMMARY_INSTRUCTION = "Summarize the following text in a few sentences."


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
    adapter: str | None = Field(
        None, description="A LoRA adapter directory (a run's adapter/) to keep training instead of starting a new "
        "one; model.name is its base. `tuneloop retrain` sets it to the served run's adapter."
    )


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
        "auto", "chat", "alpaca", "prompt_completion", "preference", "unpaired", "summarization", "classification",
        "token_classification", "text", "prompt_only",
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


class RewardSpec(_Section):
    """One reward function for GRPO (see tuneloop.train.rewards); a plain string is shorthand for {function: ...}."""

    function: str = Field(..., description="A built-in (answer_match, format_regex, json_keys, length_penalty), "
                          "'module:function', 'path/to/file.py:function', or a reward-model run directory.")
    weight: float = Field(1.0, description="Weight of this reward in the sum GRPO normalizes within each group.")
    column: str | None = Field(None, description="answer_match: the data column holding the reference (default "
                               "'answer').")
    pattern: str | None = Field(None, description="format_regex: the regular expression a reply must match "
                                "(re.search; anchor it with ^...$ for the whole reply). answer_match: a regex whose "
                                "first group is the answer (a reply it does not match is wrong).")
    keys: list[str] | None = Field(None, description="json_keys: keys the reply's JSON object must have.")
    max_words: int | None = Field(None, ge=1, description="length_penalty: replies longer than this many words "
                                  "lose reward in proportion (default 50).")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"function": value} if isinstance(value, str) else value


class GrpoConfig(_Section):
    """GRPO (train.recipe grpo, or prompt_only data with train.rewards): sampling and the policy loss."""

    num_generations: int = Field(4, ge=2, description="Replies sampled per prompt; their rewards are compared "
                                 "within the group. train.batch_size counts replies and must be a multiple of it.")
    max_completion_length: int = Field(64, ge=1, description="Most tokens sampled per reply.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature: GRPO learns only from groups whose "
                               "replies differ in reward.")
    top_p: float = Field(1.0, gt=0, le=1)
    beta: float = Field(0.04, ge=0, description="KL penalty to the starting model (with LoRA: the adapter switched "
                        "off). Small and positive keeps replies readable while the reward is chased; 0 drops it.")
    loss_type: Literal["dapo", "grpo", "dr_grpo", "bnpo"] = Field(
        "dapo", description="TRL's token aggregation: dapo (default) averages over every reply token in the batch; "
        "grpo per reply (favours short correct replies); dr_grpo by a constant."
    )
    scale_rewards: Literal["group", "batch", "none"] = Field(
        "group", description="Divide advantages by the reward spread within each group, the batch, or not at all."
    )
    num_iterations: int = Field(1, ge=1, description="Optimizer passes over each batch of sampled replies.")
# TRL's DPOTrainer loss_type values (trl/trainer/dpo_config.py); "sft" is train.preference.sft_weight instead.
DPO_LOSSES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sigmoid_norm")
CPO_LOSSES = ("sigmoid", "hinge", "ipo")  # TRL's CPOTrainer; SimPO is train.recipe: simpo


class PreferenceConfig(_Section):
    """Preference tuning (train.recipe dpo, cpo, simpo, orpo, kto) and reward models (reward)."""

    loss: str = Field(
        "sigmoid", description="dpo: TRL's loss_type (sigmoid = DPO, ipo, hinge, robust, ...); cpo: sigmoid, hinge "
        "or ipo; kto: kto or apo_zero_unpaired."
    )
    beta: float = Field(
        0.1, gt=0, description="dpo/cpo/simpo/kto: how far the model may move from the reference (higher: less). "
        "simpo: the reward scale (SimPO's paper uses 2 to 10). orpo: the weight of the odds-ratio term (lambda)."
    )
    label_smoothing: float = Field(
        0.0, ge=0, lt=0.5, description="dpo robust/exo_pair and cpo: the assumed share of flipped preference labels."
    )
    sft_weight: float | None = Field(
        None, ge=0, description="dpo: add the SFT loss on the chosen replies with this weight (LLaMA-Factory's "
        "pref_ftx; null or 0: none). cpo: the weight of its behaviour-cloning term on the chosen replies (null: "
        "TRL's 1.0)."
    )
    precompute_ref_log_probs: bool = Field(
        False, description="dpo/kto with full fine-tuning: score the reference once before training instead of "
        "keeping a second copy of the model in memory. With LoRA the reference is the adapter switched off. DPO and "
        "KTO on their packed path (train.packing, the default) always score the reference once."
    )
    simpo_gamma: float = Field(0.5, ge=0, description="simpo: the target reward margin (gamma).")
    desirable_weight: float = Field(1.0, gt=0, description="kto: weight of the losses on desirable completions.")
    undesirable_weight: float = Field(1.0, gt=0, description="kto: weight of the losses on undesirable completions.")
    max_prompt_share: float = Field(
        0.5, gt=0, lt=1, description="Long conversations lose their earliest turns until the prompt fits in this "
        "share of data.max_length, so the replies (what is compared) are not cut off."
    )

    @model_validator(mode="after")
    def _known_loss(self) -> PreferenceConfig:
        allowed = DPO_LOSSES + ("kto", "apo_zero_unpaired")
        if self.loss not in allowed:
            raise ValueError(f"train.preference.loss={self.loss!r} is unknown; allowed: {', '.join(allowed)}")
        return self


class AutoConfig(_Section):
    """train.auto: search the keys that matter within a time budget (as `tuneloop run --auto BUDGET`)."""

    budget: str = Field(..., description="Wall-clock budget with a unit: 30m, 2h, 1h30m, 900s.")


class TrainConfig(_Section):
    """How the model is trained."""

    recipe: Literal["auto", "sft", "dpo", "cpo", "simpo", "orpo", "kto", "reward", "grpo"] = Field(
        "auto", description="The training method; auto picks from the data format (preference pairs: dpo, unpaired "
        "thumbs up/down: kto, conversations: sft, ...). dpo, cpo, simpo and orpo train on preference pairs (simpo, "
        "cpo and orpo need no reference model), kto on unpaired rows (or pairs, split in two), reward trains a "
        "reward model on pairs, grpo trains against reward functions on prompts."
    )
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
        True, description="SFT, DPO and KTO: run each batch's examples back to back in one row (no padding tokens; "
        "attention stays within each sequence; DPO/KTO compute each prompt once for both replies)."
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
    auto: AutoConfig | None = Field(
        None, description="{budget: 30m}: `tuneloop run` searches the few keys that matter for this recipe within the "
        "budget, trial 0 being the defaults table's values, and scores the winner once on test (docs/defaults.md)."
    )
    lora: LoraConfig = LoraConfig()
    grpo: GrpoConfig = GrpoConfig()
    rewards: list[RewardSpec] = Field(
        default_factory=list, description="GRPO reward functions, summed with their weights: built-ins, "
        "'module:function', 'file.py:function' or a reward-model run directory (docs/recipes/grpo.md)."
    )
    preference: PreferenceConfig = PreferenceConfig()
    guard: GuardConfig = Field(
        GuardConfig(), description="Forgetting guards: replay, self_distill, kl_to_base, interpolate, freeze_layers "
        "(docs/forgetting.md); all off by default."
    )


GENERATION_METRICS = ("exact_match", "contains_answer", "rouge_1", "rouge_2", "rouge_l", "bleu", "chrf", "token_f1")
DEFAULT_GENERATION_METRICS = ("exact_match", "contains_answer", "rouge_l", "bleu", "chrf", "token_f1")
# A summary is never an exact match: overlap of words (ROUGE-1), word pairs (ROUGE-2) and order (ROUGE-L) is.
SUMMARIZATION_METRICS = ("rouge_1", "rouge_2", "rouge_l", "bleu", "chrf")


class SafetyConfig(_Section):
    """The safety gate: base and tuned replies to risky prompts scored by a harmlessness reward model."""

    prompts: str = Field(..., description="File of prompts (jsonl/csv rows with a prompt or messages, or preference "
                         "or HH rows, whose prompts are used).")
    scorer: str = Field(..., description="The run directory of a reward run (train.recipe: reward) that scores "
                        "harmlessness, or its model/ directory.")
    max_drop: float = Field(
        0.0, ge=0, description="The run fails when the tuned model's mean score is below the baseline's by more "
        "than this (in reward units) and the paired test says the drop is real (p < 0.05)."
    )
    max_prompts: int = Field(100, ge=2, description="Prompts scored, from the start of the file.")


class EvaluateConfig(_Section):
    """How the tuned model and its untuned baseline are scored."""

    baseline: bool = Field(True, description="Score the untuned model on the same rows.")
    max_samples: int = Field(200, ge=1, description="Held-out rows scored by generation.")
    max_pairs: int | None = Field(
        None, ge=1, description="Preference runs: held-out pairs scored by log-likelihood (cheap next to generation, "
        "so it can be far more than max_samples for a tight interval); null: max_samples."
    )
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
    drift_texts: list[str] = Field(
        default_factory=list, description="General-text files (any format; each row or .txt paragraph a document) "
        "on which the per-token KL(tuned || base) is measured, with a bootstrap interval over documents."
    )
    drift_max_documents: int = Field(200, ge=2, description="Documents of evaluate.drift_texts scored, from the start.")
    reward_model: str | None = Field(
        None, description="Preference runs: the run directory of a reward run (train.recipe: reward) that scores the "
        "generated replies of base and tuned model."
    )
    safety: SafetyConfig | None = Field(
        None, description="The safety gate: {prompts: FILE, scorer: REWARD_RUN, max_drop: 0}; a measurably less "
        "harmless tuned model fails the run."
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


# Objective metrics a search can optimize: validation loss, or a task metric scored on the validation split.
SEARCH_METRICS = (
    ("validation_loss",) + GENERATION_METRICS
    + ("accuracy", "f1_macro", "f1_micro", "precision_macro", "recall_macro")  # classification
    + ("entity_f1", "entity_precision", "entity_recall", "entity_f1_macro", "token_accuracy")  # NER
    + ("domain_perplexity", "domain_loss")  # continued pretraining
)
SEARCH_SAMPLERS = ("tpe", "random", "grid", "gp", "cmaes")


def lower_is_better(metric: str) -> bool:
    return metric.endswith("_loss") or metric.endswith("_perplexity")


class SearchObjective(_Section):
    """What a trial is judged by: always validation data, never the test set."""

    metric: str = Field("validation_loss", description=f"One of: {', '.join(SEARCH_METRICS)}.")
    direction: Literal["minimize", "maximize"] | None = Field(
        None, description="null: minimize losses and perplexities, maximize everything else."
    )

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, name: str) -> str:
        if name not in SEARCH_METRICS:
            raise ValueError(f"unknown objective metric; allowed: {', '.join(SEARCH_METRICS)}")
        return name

    @model_validator(mode="after")
    def _sensible_direction(self) -> SearchObjective:
        natural = "minimize" if lower_is_better(self.metric) else "maximize"
        if self.direction is not None and self.direction != natural:
            raise ValueError(f"direction={self.direction} on {self.metric} would pick the worst trial; "
                             f"use {natural} (or leave direction out)")
        return self

    @property
    def resolved_direction(self) -> str:
        return self.direction or ("minimize" if lower_is_better(self.metric) else "maximize")


class SearchConfig(_Section):
    """A hyperparameter search over ordinary runs (`tuneloop tune`; `tuneloop run` trains the config as written)."""

    objective: SearchObjective = SearchObjective()
    trials: int = Field(20, ge=1, description="Finished (complete or pruned) trials the study stops at.")
    sampler: Literal["tpe", "random", "grid", "gp", "cmaes"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = Field(
        "median", description="Stops trials whose validation loss at an evaluation trails the other trials'."
    )
    pruner_startup_trials: int = Field(5, ge=0, description="Finished trials before the median pruner judges any.")
    pruner_warmup_steps: int = Field(
        0, ge=0, description="Optimizer steps before the median pruner judges a trial (its warmup: early losses rank "
        "trials poorly when learning rates or warmups differ)."
    )
    cv_folds: int | None = Field(
        None, ge=2, le=20, description="k: each trial's objective is the mean over k folds (near-duplicate clusters "
        "kept within one fold)."
    )
    timeout: float | None = Field(None, gt=0, description="Seconds after which no new trial starts.")
    heartbeat: int = Field(
        60, ge=1, description="Seconds between a worker's heartbeats; a trial silent for twice this is failed and "
        "retried by another worker."
    )
    space: dict[str, Any] = Field(
        ..., description="Dotted config key -> {log_uniform: [lo, hi]} | {uniform: [lo, hi]} | {int: [lo, hi]} | "
        "{choice: [...]}."
    )


class RunConfig(_Section):
    """One run: a model, its data, how to train and how to evaluate; outputs land in output_dir."""

    output_dir: str = Field("runs/run", description="The run directory; everything the run writes lands here.")
    seed: int = 42
    model: ModelConfig = ModelConfig()
    data: DataConfig
    train: TrainConfig = TrainConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    tracking: TrackingConfig = TrackingConfig()
    search: SearchConfig | None = Field(
        None, description="A hyperparameter search (`tuneloop tune`); see docs/search.md."
    )

    @model_validator(mode="after")
    def _adapter_needs_lora(self) -> RunConfig:
        if self.model.adapter and self.train.method in ("full", "qlora"):
            raise ValueError("model.adapter continues an adapter, so train.method must be an adapter method "
                             "(lora, dora, ia3, prefix, prompt) "
                             f"(got {self.train.method!r}); remove model.adapter to fine-tune fully")
        return self


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
        if part.isdigit():  # an index into a list of sections (train.rewards.1): the item's model is already found
            continue
        if part not in model.model_fields:
            return []
        annotation = model.model_fields[part].annotation
        # An optional section (search: SearchConfig | None) names its model among the union's members.
        annotation = next((a for a in get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)),
                          annotation)
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def config_to_yaml(config: RunConfig) -> str:
    dumped = config.model_dump(mode="json")
    if dumped.get("search") is None:  # most runs search nothing: keep their config.yaml as it was
        dumped.pop("search", None)
    return yaml.safe_dump(dumped, sort_keys=False)
