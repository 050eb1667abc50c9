"""Export a run's result: the LoRA adapter as is, or a merged HF model directory any transformers user can load.

A merged export holds config.json, model.safetensors, generation_config.json, the tokenizer with
the chat template used in training, and a short model card (README.md).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tuneloop.config import RunConfig
from tuneloop.errors import TuneloopError
from tuneloop.models.load import load_causal_lm, load_tokenizer
from tuneloop.models.registry import resolve_model
from tuneloop.workspace import RunDir, read_json, write_text


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

        base = load_causal_lm(resolve_model(config.model.name), torch.float32, "cpu")
        merged = PeftModel.from_pretrained(base, str(weights)).merge_and_unload()
        merged.save_pretrained(str(staging))
        load_tokenizer(str(weights)).save_pretrained(str(staging))
        kind = "merged model (LoRA folded into the base weights)"
    else:
        shutil.copytree(weights, staging)
        kind = "LoRA adapter (load with peft.PeftModel on the base model)" if weights == run.adapter else "full model"
    write_text(staging / "README.md", model_card(config, run, kind))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def model_card(config: RunConfig, run: RunDir, kind: str) -> str:
    lines = [
        f"# {Path(config.output_dir).name}",
        "",
        f"Fine-tuned with tuneloop from `{config.model.name}` ({config.train.method}); this export is a {kind}.",
        "",
        f"- training data: `{config.data.train_file}` ({config.data.format} format)",
        f"- held-out data: `{config.data.test_file or 'a validation split of the training data'}`",
    ]
    if run.metrics.is_file():
        metrics = read_json(run.metrics)
        lines += ["", f"## Held-out results ({metrics['heldout']['rows']} rows, split: {metrics['heldout']['split']})",
                  "", "| metric | baseline | tuned |", "|---|---|---|"]
        for key, value in metrics["tuned"].items():
            if key == "validation_tokens":
                continue
            base = metrics.get("baseline", {}).get(key)
            shown_base = f"{base:.3f}" if base is not None else "-"
            lines.append(f"| {key} | {shown_base} | {value:.3f} |")
    lines += [
        "",
        "## Limits",
        "",
        "A small model tuned on a small dataset: it answers what the training data covers and can state wrong",
        "facts confidently outside it. Check the held-out results above before relying on it.",
        "",
    ]
    return "\n".join(lines)
