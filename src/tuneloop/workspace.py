"""The run directory: where every stage reads and writes, the manifest, atomic writes, and the cache folder.

Layout of a run directory:
    config.yaml        the resolved config the run used
    manifest.json      config, sha256 of each data file, package versions, seed, git commit
    data/              the prepared splits (train / validation / test .jsonl) and data_report.json
    checkpoints/       trainer checkpoints (resume continues from the newest)
    adapter/ | model/  the trained LoRA adapter, or the fully fine-tuned model, with its tokenizer
    train_log.jsonl    one line per logged training step / evaluation
    metrics.json       {"baseline": {...}, "tuned": {...}}
    samples.jsonl      held-out prompts with reference, baseline and tuned answers
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from tuneloop.errors import TuneloopError


def cache_root() -> Path:
    """Where tuneloop keeps what outlives a run (imported models, WordNet, self-replay replies): $TUNELOOP_HOME."""
    return Path(os.environ.get("TUNELOOP_HOME", Path.home() / ".cache" / "tuneloop"))


TRACKED_PACKAGES = ("tuneloop", "torch", "transformers", "peft", "trl", "accelerate", "datasets")


@dataclass(frozen=True)
class RunDir:
    root: Path

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.root / "adapter"

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def train_log(self) -> Path:
        return self.root / "train_log.jsonl"

    @property
    def metrics(self) -> Path:
        return self.root / "metrics.json"

    @property
    def samples(self) -> Path:
        return self.root / "samples.jsonl"

    def split(self, name: str) -> Path:
        return self.data / f"{name}.jsonl"

    def trained_weights(self) -> Path | None:
        """The adapter or full model this run produced, or None if training has not finished."""
        for candidate in (self.adapter, self.model):
            if (candidate / "config.json").exists() or (candidate / "adapter_config.json").exists():
                return candidate
        return None

    def data_format(self) -> str | None:
        """The format the data stage found (classification, chat, ...), or None before it ran."""
        report = self.data / "data_report.json"
        return read_json(report)["format"] if report.is_file() else None

    def last_checkpoint(self) -> Path | None:
        if not self.checkpoints.is_dir():
            return None
        steps = [
            (int(p.name.split("-")[-1]), p)
            for p in self.checkpoints.glob("checkpoint-*")
            if p.name.split("-")[-1].isdigit() and (p / "trainer_state.json").exists()
        ]
        return max(steps)[1] if steps else None


def open_run_dir(path: str | Path) -> RunDir:
    """An existing run directory (one with a config.yaml), or a clear error."""
    run = RunDir(Path(path))
    if not run.config.is_file():
        raise TuneloopError(
            f"{path}: not a tuneloop run directory (no config.yaml). "
            "Pass the output_dir of a run started with `tuneloop run CONFIG` or `tuneloop train CONFIG`."
        )
    return run


def write_json(path: Path, payload: Any) -> None:
    write_text(path, json.dumps(payload, indent=2, ensure_ascii=False, default=str) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write through a temporary file and rename, so an interruption never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def write_jsonl(path: Path, rows: list[dict]) -> None:
    write_text(path, "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def sha256_file(path: Path) -> str:
    """The file's SHA-256; for a directory (a saved dataset, a folder of shards), of its files' names and bytes."""
    digest = hashlib.sha256()
    if path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(str(file.relative_to(path)).encode() + b"\0" + sha256_file(file).encode())
        return digest.hexdigest()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: how configs are compared and logged as parameters."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def build_manifest(config: dict, data_files: dict[str, str | None], seed: int) -> dict:
    return {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(Path(sys.argv[0]).name.split() + sys.argv[1:]),
        "config": config,
        "data_files": {
            role: {"path": path, "sha256": sha256_file(Path(path))} for role, path in data_files.items() if path
        },
        "seed": seed,
        "packages": package_versions(),
        "git_commit": git_commit(),
        "platform": platform.platform(),
    }
