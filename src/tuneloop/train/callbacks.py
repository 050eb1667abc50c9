"""Trainer callbacks: a progress bar with ETA, loss and tokens/s; a JSONL log; a clean stop on Ctrl-C; the set
every recipe installs (trainer_callbacks), in place of transformers' own printing."""

from __future__ import annotations

import json
import signal
import threading
import time
from pathlib import Path

from tqdm.auto import tqdm
from transformers import TrainerCallback

from tuneloop.config.schema import RunConfig
from tuneloop.train.memory_trim import MemoryTrimCallback
from tuneloop.workspace import RunDir


class ProgressCallback(TrainerCallback):
    """One bar for the whole run: steps, ETA, latest train loss, validation loss and real tokens per second."""

    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.started = 0.0
        self.tokens_at_start = 0
        self.postfix: dict[str, str] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero:  # one bar per run, not one per process
            return
        self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="train", unit="step", dynamic_ncols=True)
        self.started = time.perf_counter()
        self.tokens_at_start = state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is None:
            return
        elapsed = time.perf_counter() - self.started
        if elapsed > 0 and state.num_input_tokens_seen:
            self.postfix["tok/s"] = f"{(state.num_input_tokens_seen - self.tokens_at_start) / elapsed:.0f}"
        self.bar.set_postfix(self.postfix, refresh=False)
        self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" in logs:
            self.postfix["loss"] = f"{logs['loss']:.3f}"
        if "eval_loss" in logs:
            self.postfix["val"] = f"{logs['eval_loss']:.3f}"
        if "reward" in logs:  # GRPO: the mean reward of the sampled replies
            self.postfix["reward"] = f"{logs['reward']:.3f}"

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.set_postfix(self.postfix)
            self.bar.close()
            self.bar = None


class JsonlLogCallback(TrainerCallback):
    """Append every log record (train loss, eval loss, learning rate, tokens seen) to train_log.jsonl."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        record = {"step": state.global_step, "epoch": state.epoch, **logs}
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")


class GracefulInterrupt(TrainerCallback):
    """First Ctrl-C (or SIGTERM): save a checkpoint at the end of the current step and stop. Second: stop now."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> GracefulInterrupt:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may install signal handlers; elsewhere the caller stops us
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        tqdm.write("\ninterrupt: saving a checkpoint after this step (press Ctrl-C again to stop at once)")

    def on_step_end(self, args, state, control, **kwargs):
        if self.requested:
            control.should_save = True
            control.should_training_stop = True
        return control


def trainer_callbacks(config: RunConfig, run: RunDir, tracker) -> list:
    from transformers import EarlyStoppingCallback

    from tuneloop.train.tracking import TrackingCallback

    callbacks = [ProgressCallback(), JsonlLogCallback(run.train_log)]
    if tracker is not None:
        callbacks.append(TrackingCallback(tracker))
        callbacks.extend(tracker.trainer_callbacks())
    if config.train.early_stopping_patience is not None:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=config.train.early_stopping_patience))
    if config.train.trim_memory_every is not None:
        callbacks.append(MemoryTrimCallback(config.train.trim_memory_every))
    return callbacks


def replace_default_printing(trainer) -> None:
    from transformers.trainer_callback import PrinterCallback
    from transformers.trainer_callback import ProgressCallback as HFProgress

    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(HFProgress)
