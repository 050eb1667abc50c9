"""Export a run's result for the runtime that will serve it: `tuneloop export RUN --out DIR --format ...`.

    hf      the adapter as is, or with --merge a standalone HF model directory (config.json,
            model.safetensors, generation_config.json, the tokenizer with the chat template used in
            training) any transformers user can load
    gguf    model.gguf, the merged model for llama.cpp (f16, bf16 or q8_0: --quant); with --adapter
            (LoRA runs) base.gguf and adapter.gguf instead, for `llama-cli -m base.gguf --lora adapter.gguf`
    ollama  the gguf files plus a Modelfile (FROM, TEMPLATE derived from the chat template, SYSTEM,
            stop parameters); `ollama create NAME -f Modelfile` is the one command left
    vllm    the merged HF directory (model/), or with --adapter the base's path plus the adapter
            directory, and serve.sh holding the exact `vllm serve` command
Every export carries a model card (README.md) with the run's evidence.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tuneloop.config.schema import RunConfig
from tuneloop.data.classification_prompt import LABELS_FILE
from tuneloop.errors import TuneloopError
from tuneloop.models.load import load_generator, load_tokenizer, load_tuned_classifier, merged_tuned_model
from tuneloop.models.model_card import model_card
from tuneloop.models.registry import resolve_model
from tuneloop.workspace import RunDir, read_jsonl, write_text

EXPORT_FORMATS = ("hf", "gguf", "ollama", "vllm")


def export_run(config: RunConfig, run: RunDir, out: Path, merge: bool = False, fmt: str = "hf", quant: str = "f16",
               adapter: bool = False, console_print=print) -> Path:
    """Write the export into out (built in a staging directory, renamed when complete); return out."""
    weights = run.trained_weights()
    if weights is None:
        raise TuneloopError(f"{run.root}: nothing to export yet; train first (`tuneloop run {run.config}`).")
    if out.exists() and any(out.iterdir()):
        raise TuneloopError(f"--out: {out} exists and is not empty; choose a new directory.")
    if fmt not in EXPORT_FORMATS:
        raise TuneloopError(f"--format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}.")
    if adapter and weights != run.adapter:
        raise TuneloopError(f"--adapter: {run.root} trained the whole model ({config.train.method}); there is no "
                            "adapter to export apart. Drop --adapter.")
    if fmt != "hf" and run.data_format() in ("classification", "token_classification") \
            and config.train.classifier != "generate":
        raise TuneloopError(f"--format {fmt}: a classifier with a trained head is not a text generator; llama.cpp, "
                            "Ollama and vLLM serve generators. Use --format hf.")
    staging = out.with_name(out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    if fmt == "hf":
        kind = _export_hf(config, run, weights, staging, merge)
    elif fmt in ("gguf", "ollama"):
        kind = _export_gguf(config, run, weights, staging, quant, adapter, console_print)
        if fmt == "ollama":
            kind = _add_modelfile(config, run, weights, staging, adapter, console_print) + kind
    else:
        kind = _export_vllm(config, run, weights, staging, adapter, console_print)
    write_text(staging / "README.md", model_card(config, run, kind))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    return out


def _export_hf(config: RunConfig, run: RunDir, weights: Path, staging: Path, merge: bool) -> str:
    import torch

    if weights == run.adapter and merge:
        if run.data_format() == "token_classification" or (
            run.data_format() == "classification" and config.train.classifier != "generate"
        ):
            tuned, _ = load_tuned_classifier(run, resolve_model(config.model.name), torch.float32, "cpu")
            merged = tuned.merge_and_unload()
        else:
            merged = merged_tuned_model(run, resolve_model(config.model.name), config.train.method)
        merged.save_pretrained(str(staging))
        load_tokenizer(str(weights)).save_pretrained(str(staging))
        if (weights / LABELS_FILE).is_file():  # a generative classifier's label names travel with it
            shutil.copy2(weights / LABELS_FILE, staging / LABELS_FILE)
        return f"merged model ({config.train.method} folded into the base weights)"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(weights, staging)
    if weights == run.adapter:
        return f"{config.train.method} adapter (load with peft.PeftModel on the base model)"
    return "full model"


def _export_gguf(config: RunConfig, run: RunDir, weights: Path, staging: Path, quant: str, adapter: bool,
                 console_print) -> str:
    import torch

    from tuneloop.models.export_gguf import write_lora_gguf, write_model_gguf

    base_path = resolve_model(config.model.name)
    tokenizer = load_tokenizer(str(weights))
    name = Path(config.output_dir).name
    if adapter:
        base = load_generator(base_path, torch.float32, "cpu")
        console_print(f"export: writing base.gguf ({quant}) and adapter.gguf")
        write_model_gguf(base, tokenizer, staging / "base.gguf", quant, name=f"{config.model.name}")
        write_lora_gguf(weights, base.config, staging / "adapter.gguf", quant)
        return f"GGUF base model ({quant}) and GGUF LoRA adapter, for llama.cpp"
    model = (merged_tuned_model(run, base_path, config.train.method) if weights == run.adapter
             else load_generator(str(weights), torch.float32, "cpu"))
    console_print(f"export: writing model.gguf ({quant})")
    write_model_gguf(model, tokenizer, staging / "model.gguf", quant, name=name)
    return f"GGUF model ({quant}, {config.train.method} merged), for llama.cpp"


def _add_modelfile(config: RunConfig, run: RunDir, weights: Path, staging: Path, adapter: bool, console_print) -> str:
    from tuneloop.models.runtimes import modelfile, run_system_prompt

    tokenizer = load_tokenizer(str(weights))
    system = run_system_prompt(read_jsonl(run.split("train"))) if run.split("train").is_file() else None
    text = modelfile("base.gguf" if adapter else "model.gguf", tokenizer, system,
                     adapter_name="adapter.gguf" if adapter else None)
    write_text(staging / "Modelfile", text)
    name = Path(config.output_dir).name.lower().replace("_", "-")
    console_print(f"export: next, from the export directory: ollama create {name} -f Modelfile && ollama run {name}")
    return f"Ollama model (run `ollama create {name} -f Modelfile` in this directory); "


def _export_vllm(config: RunConfig, run: RunDir, weights: Path, staging: Path, adapter: bool, console_print) -> str:
    import json

    from tuneloop.models.runtimes import vllm_command, write_serve_script

    name = Path(config.output_dir).name.lower().replace("_", "-")
    base_path = resolve_model(config.model.name)
    if adapter:
        settings = json.loads((weights / "adapter_config.json").read_text())
        if settings.get("peft_type") != "LORA" or settings.get("use_dora"):
            raise TuneloopError(f"--adapter: vLLM serves LoRA adapters only; this run trained {config.train.method}. "
                                "Drop --adapter to export a merged model.")
        shutil.copytree(weights, staging / "adapter")
        command = vllm_command(str(Path(base_path).resolve()) if Path(base_path).exists() else base_path, name,
                               adapter=(name, "./adapter", settings["r"]))
        kind = f"LoRA adapter for vLLM on `{config.model.name}` (serve.sh)"
    else:
        _export_hf(config, run, weights, staging / "model", merge=True)
        command = vllm_command("./model", name)
        kind = "merged model for vLLM (serve.sh)"
    write_serve_script(staging / "serve.sh", command)
    console_print(f"export: serve with: {command}   (written to serve.sh; needs `pip install vllm` and a GPU)")
    return kind + f"; serve: `{command}`"
