"""Weight interpolation (train.guard.interpolate, WiSE-FT): weights = base + alpha * (tuned - base) after training.

Full fine-tuning interpolates every trained tensor with the base's. LoRA scales the adapter: the
learned change is scale * B @ A, so alpha * B gives exactly base + alpha * (tuned - base), and the
saved adapter holds the interpolated weights. `alpha: auto` scores every candidate alpha (and 0, the
base) on the validation loss and on forgetting questions (or drift texts), and keeps the alpha that
forgets least among those keeping `keep_gain` of the validation-loss gain; the curve lands in guard.json
and the report. The questions it uses come after the evaluate.forgetting_limit ones the final
evaluation scores, so the choice is not made on the questions that judge it (when the file has no
more, it says so and reuses them).
"""

from __future__ import annotations

from tuneloop.errors import ConfigError

INTERPOLABLE_METHODS = ("lora", "qlora", "full")


class Interpolator:
    """Moves a trained model's weights along the line from the base (alpha 0) to the tuned model (alpha 1)."""

    def __init__(self, model, method: str, base_path: str | None = None):
        import torch

        if method not in INTERPOLABLE_METHODS:
            raise ConfigError(f"train.guard.interpolate: works with train.method lora or full (got {method!r}: "
                              "its change is not a straight line from the base); remove the key or change method.")
        self.parameters = {name: p for name, p in model.named_parameters() if p.requires_grad}
        if method == "full":
            from tuneloop.models.load import load_causal_lm

            base = dict(load_causal_lm(base_path, torch.float32, "cpu").named_parameters())
            self.base = {name: base[name].detach().to(p.device, p.dtype) for name, p in self.parameters.items()}
        else:  # the adapter's B matrices carry the change; the base is B = 0
            self.parameters = {name: p for name, p in self.parameters.items() if "lora_B" in name}
            self.base = None
        if not self.parameters:
            raise ConfigError("train.guard.interpolate: the model has no trained weights to interpolate.")
        self.tuned = {name: p.detach().clone() for name, p in self.parameters.items()}
        self.alpha = 1.0

    def set(self, alpha: float) -> None:
        import torch

        with torch.no_grad():
            for name, p in self.parameters.items():
                if self.base is None:
                    p.copy_(self.tuned[name] * alpha)
                else:
                    p.copy_(self.base[name] + alpha * (self.tuned[name] - self.base[name]))
        self.alpha = alpha


def choose_alpha(curve: list[dict], keep_gain: float) -> float:
    """The alpha that forgets least among those keeping keep_gain of the validation-loss gain (ties: smaller alpha).

    curve rows: {"alpha", "validation_loss", "forgetting"} with alpha 0 (the base) and 1 (the tuned model) present;
    forgetting is higher-is-worse (accuracy lost, or KL from the base).
    """
    by_alpha = {row["alpha"]: row for row in curve}
    base_loss, tuned_loss = by_alpha[0.0]["validation_loss"], by_alpha[1.0]["validation_loss"]
    gain = base_loss - tuned_loss
    for row in curve:
        row["gain_share"] = (base_loss - row["validation_loss"]) / gain if gain > 0 else None
    if gain <= 0:  # training did not lower the validation loss: nothing to keep, so keep the tuned model as trained
        return 1.0
    eligible = [row for row in curve if row["alpha"] > 0 and row["gain_share"] >= keep_gain]
    eligible = eligible or [by_alpha[1.0]]
    return min(eligible, key=lambda row: (round(row["forgetting"], 9), row["alpha"]))["alpha"]


def interpolate_after_training(model, settings, method: str, base_path: str, measure, console_print=print) -> dict:
    """Apply train.guard.interpolate to the trained model in place; return what guard.json records.

    measure(model) -> {"validation_loss": float, "forgetting": float, "criterion": str} (used by alpha: auto).
    """
    interpolator = Interpolator(model, method, base_path)
    if settings.alpha != "auto":
        interpolator.set(float(settings.alpha))
        console_print(f"interpolate: weights = base + {settings.alpha:g} x (tuned - base)")
        return {"alpha": float(settings.alpha), "mode": "fixed"}
    curve = []
    for alpha in sorted({0.0, 1.0, *settings.candidates}):
        interpolator.set(alpha)
        curve.append({"alpha": alpha, **measure(model)})
    chosen = choose_alpha(curve, settings.keep_gain)
    interpolator.set(chosen)
    console_print("interpolate: auto " + ", ".join(
        f"a={row['alpha']:g}: val {row['validation_loss']:.3f} forgetting {row['forgetting']:.3f}" for row in curve)
        + f" -> alpha {chosen:g}")
    return {"alpha": chosen, "mode": "auto", "keep_gain": settings.keep_gain, "criterion": curve[0]["criterion"],
            "curve": curve}
