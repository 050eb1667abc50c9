"""The `train.guard` config section: switches that keep what the base model knew (all off by default)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _GuardSection(BaseModel):
    # As config.py's sections: an unknown key is an error, never a silent default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)


class ReplayConfig(_GuardSection):
    """Mix general examples into every epoch: rows from files, and/or the base model's own replies."""

    files: list[str] = Field(default_factory=list, description="General examples in any format tuneloop reads "
                             "(chat, alpaca, prompt_completion, text); sampled with the run's seed.")
    self_prompts: int | None = Field(
        None, alias="self", ge=1, description="Replay the base model's own greedy replies to this many general "
        "prompts from tuneloop's built-in prompt set (tuneloop.data.general_prompts), generated once and cached."
    )
    ratio: float = Field(0.2, gt=0, lt=1, description="Share of the training examples of each epoch that are "
                         "replay (0.2: 1 replay row for every 4 task rows).")
    max_new_tokens: int = Field(96, ge=8, description="replay.self: most tokens of each generated reply.")

    @model_validator(mode="after")
    def _has_a_source(self) -> ReplayConfig:
        if not self.files and self.self_prompts is None:
            raise ValueError("train.guard.replay needs files: [...] (general examples) or self: N (the base "
                             "model's replies to N built-in prompts), or both")
        return self


class SelfDistillConfig(_GuardSection):
    """The base model rewrites each training reply, given the reference; checked rewrites replace the reference."""

    threshold: float = Field(0.5, ge=0, le=1, description="Rows without an `answer` field: a rewrite is kept when "
                             "its word-level F1 with the reference is at least this.")
    max_new_tokens: int = Field(128, ge=8, description="Most tokens of each rewrite.")
    batch_size: int = Field(16, ge=1, description="Rows rewritten per generation batch.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {} if value is True else value


class InterpolateConfig(_GuardSection):
    """After training: weights = base + alpha * (tuned - base) (WiSE-FT); LoRA scales the adapter instead."""

    alpha: float | Literal["auto"] = Field(..., description="A number in [0, 1] (0: the base, 1: the tuned "
                                           "model) or auto: picked on validation loss and the forgetting files.")
    candidates: list[float] = Field([0.25, 0.5, 0.75, 1.0], description="auto: the alphas tried.")
    keep_gain: float = Field(0.9, gt=0, le=1, description="auto: the least share of the validation-loss gain "
                             "(base to tuned) an alpha must keep; among those, the one that forgets least wins.")
    questions: int = Field(100, ge=10, description="auto: forgetting questions scored per alpha, taken after the "
                           "evaluate.forgetting_limit questions the final evaluation scores.")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"alpha": value} if isinstance(value, int | float | str) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _alphas_in_range(self) -> InterpolateConfig:
        alphas = ([] if self.alpha == "auto" else [self.alpha]) + list(self.candidates)
        if any(not 0 <= a <= 1 for a in alphas):
            raise ValueError(f"train.guard.interpolate: alphas must lie in [0, 1] (got {alphas}); 0 is the base "
                             "model, 1 the tuned one")
        return self


class GuardConfig(_GuardSection):
    """Forgetting guards (docs/forgetting.md). Each is off unless set."""

    replay: ReplayConfig | None = Field(None, description="{files: [...], ratio: 0.2} and/or {self: N}.")
    self_distill: SelfDistillConfig | None = Field(None, description="true, or {threshold, max_new_tokens}.")
    kl_to_base: float | None = Field(None, gt=0, description="Weight of a per-token KL(tuned || base) term on the "
                                     "training batch's target tokens; LoRA's base is the adapter switched off.")
    interpolate: InterpolateConfig | None = Field(None, description="alpha in [0, 1], or auto.")
    freeze_layers: int | None = Field(None, ge=1, description="Full fine-tuning: freeze the lowest N transformer "
                                      "blocks (and the embeddings stay trainable).")

    @model_validator(mode="before")
    @classmethod
    def _false_is_off(cls, value: Any) -> Any:
        if isinstance(value, dict):  # `self_distill: false` reads as off, like leaving it out
            return {key: (None if item is False else item) for key, item in value.items()}
        return value

    def active(self) -> list[str]:
        """The switches that are on, by key."""
        return [name for name in type(self).model_fields if getattr(self, name) is not None]
