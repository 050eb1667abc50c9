"""What every evaluate stage shares: the held-out rows a run is scored on, and the baseline scored beside it."""

from __future__ import annotations

import gc

from tuneloop.config.schema import RunConfig
from tuneloop.data.prepare import load_examples
from tuneloop.models.load import load_generator
from tuneloop.workspace import RunDir, read_jsonl

SEEN_BY_EARLY_STOPPING = "validation (seen by early stopping; add data.test_file)"


def heldout_examples(config: RunConfig, run: RunDir, data_file: str | None, data_format: str | None = None,
                     validation_name: str = SEEN_BY_EARLY_STOPPING) -> tuple[list[dict], str]:
    """The rows to score and what they are: data_file when given (read as data_format, by default
    data.format), else the run's test split, else its validation split (named validation_name)."""
    if data_file:
        loaded = load_examples(data_file, data_format or config.data.format, config.data.skip_invalid,
                               summary_instruction=config.data.summary_instruction)
        return loaded.examples, str(data_file)
    if run.split("test").is_file():
        return read_jsonl(run.split("test")), "test"
    return read_jsonl(run.split("validation")), validation_name


def score_baseline(run: RunDir, base_path: str, tuned_model, dtype, device: str, score) -> dict:
    """score(model, "baseline") for the untuned model: the LoRA model with its adapter off, else the base loaded."""
    if run.trained_weights() == run.adapter:
        # The LoRA base is already loaded: switching the adapter off gives the untuned model exactly.
        with tuned_model.disable_adapter():
            return score(tuned_model, "baseline")
    base = load_generator(base_path, dtype, device)
    base.eval()
    try:
        return score(base, "baseline")
    finally:
        del base
        gc.collect()
