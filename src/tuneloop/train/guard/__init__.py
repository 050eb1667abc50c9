"""Forgetting guards (train.guard): replay, self-distillation, KL to the base, interpolation, frozen layers."""
