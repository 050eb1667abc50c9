"""Hands memory that the C allocator holds free back to the OS every few training steps (CPU, glibc).

On a CPU, PyTorch allocates tensors with glibc malloc. A packed batch's length differs every step, so
its activations differ in size, and glibc cannot reuse the freed blocks exactly: the process keeps
memory it no longer uses, and the waste grows over the run. `malloc_trim(0)` after each optimizer step
(when the step's activations are gone) returns the free pages. Measured on smollm2-135m (LoRA, 400 Alpaca
rows as chat, 50 steps, this project's 2-core CPU): peak RSS 3.35 GB without it, 3.25 GB trimming every 10
steps, 2.76 GB trimming every step, at 306 vs 282 real tokens/s (the pages fault back in each step).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import sys

from transformers import TrainerCallback


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none (macOS, Windows, musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> bool:
    """Return the allocator's free pages to the OS; False where that is not possible."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class MemoryTrimCallback(TrainerCallback):
    """Calls `release_free_memory` every `every` optimizer steps."""

    def __init__(self, every: int) -> None:
        self.every = every

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step % self.every == 0:
            release_free_memory()
