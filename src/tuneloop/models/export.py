"""Export a run's result: the LoRA adapter as is, or a merged HF model directory any transformers user can load.

A merged export holds config.json, model.safetensors, generation_config.json, the tokenizer with
the chat template used in training, and a short model card (README.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tuneloop.config import RunConfig
from tuneloop.errors import TuneloopError
from tuneloop.models.load import load_generator, load_tokenizer, load_tuned_classifier
from tuneloop.models.registry import resolve_model
from tuneloop.recipes.classify_generative import LABELS_FILE
from tuneloop.report.model_card import model_card
from tuneloop.workspace import RunDir, write_text


def export_run(config: RunConfig, run: RunDir, out: Path, merge: bool) -> Path:
    import torch

    weights = run.trained_weights()
    if weights is None:
        raise TuneloopError(f"{run.root}: nothing to export yet; train first (`tuneloop run {run.config}`).")
    if out.exists() and any(out.iterdir()):
        raise TuneloopError(f"--out: {out} exists and is not empty; choose a new directory.")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    if weights == run.adapter and merge:
        from peft import PeftModel

        if run.data_format() == "token_classification" or (
            run.data_format() == "classification" and config.train.classifier != "generate"
        ):
            tuned, _ = load_tuned_classifier(run, resolve_model(config.model.name), torch.float32, "cpu")
            merged = tuned.merge_and_unload()
        else:
            base = load_generator(resolve_model(config.model.name), torch.float32, "cpu")  # causal or T5/BART
            merged = PeftModel.from_pretrained(base, str(weights)).merge_and_unload()
        merged.save_pretrained(str(staging))
        load_tokenizer(str(weights)).save_pretrained(str(staging))
        if (weights / LABELS_FILE).is_file():  # a generative classifier's label names travel with it
            shutil.copy2(weights / LABELS_FILE, staging / LABELS_FILE)
        kind = "merged model (LoRA folded into the base weights)"
    else:
        shutil.copytree(weights, staging)
        kind = "LoRA adapter (load with peft.PeftModel on the base model)" if weights == run.adapter else "full model"
    write_text(staging / "README.md", model_card(config, run, kind))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out

