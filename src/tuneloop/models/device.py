"""Pick the device and compute dtype for a run: cuda, then mps, then cpu; bf16 wherever it runs fast."""

from __future__ import annotations

import torch

from tuneloop.errors import ConfigError


def pick_device(choice: str = "auto") -> str:
    if choice == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if choice == "cuda" and not torch.cuda.is_available():
        raise ConfigError("model.device: 'cuda' was asked for but no CUDA device is visible; use 'auto' or 'cpu'.")
    if choice == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("model.device: 'mps' was asked for but is not available; use 'auto' or 'cpu'.")
    return choice


def cpu_has_fast_bf16() -> bool:
    """AMX or AVX512-BF16: bf16 matmuls run several times faster than fp32 on such CPUs."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def pick_dtype(device: str, choice: str = "auto") -> torch.dtype:
    """The compute dtype: what autocast uses in training and what weights are loaded in for generation."""
    if choice == "auto":
        if device == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device == "cpu" and cpu_has_fast_bf16():
            return torch.bfloat16
        return torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[choice]
