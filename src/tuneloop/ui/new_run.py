"""New run: a draft from an example config or an uploaded data file, its audit, the main keys, validation, start.

A draft is a folder WORKSPACE/.tuneloop-ui/drafts/ID/ with config.yaml (the config being edited), the uploaded
data file if any, and audit.json (the audit of the training file, shown before anything trains). Starting it
writes the final config (output_dir inside the workspace, absolute) and runs `tuneloop run` as a job.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml
from pydantic import ValidationError

from tuneloop.config.schema import RunConfig, describe_error
from tuneloop.errors import ConfigError, DataError, TuneloopError
from tuneloop.ui.jobs import Job, start_job, tuneloop_command, ui_dir
from tuneloop.ui.runs import RUN_NAME
from tuneloop.workspace import read_json, write_json, write_text

UPLOAD_SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")
MAX_UPLOAD_BYTES = 200 * 1024 * 1024
DEFAULT_MODEL = "smollm2-135m-instruct"


@dataclass(frozen=True)
class Field:
    """One key the form edits: its config path, label, and how the text box's value becomes YAML."""

    key: str
    label: str
    kind: str  # text | number | choice
    choices: tuple[str, ...] = ()


FIELDS = (
    Field("model.name", "model", "text"),
    Field("train.method", "method", "choice", ("lora", "dora", "full", "qlora", "prefix", "prompt", "ia3")),
    Field("train.epochs", "epochs", "number"),
    Field("train.max_steps", "max steps", "number"),
    Field("train.learning_rate", "learning rate", "number"),
    Field("train.lora.rank", "LoRA rank", "number"),
    Field("train.batch_size", "batch size", "number"),
)


def example_configs(examples: Path) -> list[Path]:
    return sorted(p for p in examples.glob("*.yaml") if p.is_file()) if examples.is_dir() else []


def get_key(raw: dict, key: str):
    node = raw
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def set_key(raw: dict, key: str, value) -> None:
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    if value is None:
        node.pop(parts[-1], None)
    else:
        node[parts[-1]] = value


def _drafts(workspace: Path) -> Path:
    return ui_dir(workspace) / "drafts"


def draft_dir(workspace: Path, draft: str) -> Path:
    if not re.fullmatch(r"[0-9a-f]{12}", draft) or not (_drafts(workspace) / draft / "config.yaml").is_file():
        raise TuneloopError(f"draft {draft!r} is gone (drafts live in {_drafts(workspace)}); start again from "
                            "New run.")
    return _drafts(workspace) / draft


def read_draft(workspace: Path, draft: str) -> tuple[dict, dict | None]:
    root = draft_dir(workspace, draft)
    raw = yaml.safe_load((root / "config.yaml").read_text(encoding="utf-8")) or {}
    audit = read_json(root / "audit.json") if (root / "audit.json").is_file() else None
    return raw, audit


def _new_draft(workspace: Path) -> Path:
    root = _drafts(workspace) / secrets.token_hex(6)
    root.mkdir(parents=True)
    return root


def draft_from_example(workspace: Path, examples: Path, name: str) -> str:
    path = next((p for p in example_configs(examples) if p.name == name), None)
    if path is None:
        raise TuneloopError(f"example {name!r}: not one of the example configs in {examples}.")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}).") from None
    if "stages" in raw:
        raise TuneloopError(f"{name} is a multi-stage config; the UI starts single-stage runs. Run it with "
                            f"`tuneloop run {path}`.")
    root = _new_draft(workspace)
    raw["output_dir"] = str(workspace / free_name(workspace, Path(str(raw.get("output_dir") or path.stem)).name))
    write_text(root / "config.yaml", yaml.safe_dump(raw, sort_keys=False))
    _audit(root, raw)
    return root.name


def draft_from_upload(workspace: Path, filename: str, content: bytes) -> str:
    """A draft that trains the default model on an uploaded file; a bad file is refused with the reason."""
    name = Path(filename or "").name
    if not name:
        raise DataError("No file was chosen: pick a data file (.jsonl with one example per line) to upload.")
    if not name.lower().endswith(UPLOAD_SUFFIXES):
        raise DataError(f"{name}: not a data file tuneloop reads; upload {', '.join(UPLOAD_SUFFIXES)} "
                        "(docs/data-formats.md lists the row shapes).")
    if not content.strip():
        raise DataError(f"{name}: the file is empty.")
    if len(content) > MAX_UPLOAD_BYTES:
        raise DataError(f"{name}: larger than {MAX_UPLOAD_BYTES >> 20} MB; point a config at it instead "
                        "(`tuneloop run CONFIG`).")
    root = _new_draft(workspace)
    data = root / name
    data.write_bytes(content)
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(name).stem).strip("-.") or "run"
    raw = {"output_dir": str(workspace / free_name(workspace, stem)), "model": {"name": DEFAULT_MODEL},
           "data": {"train_file": str(data.resolve())}, "train": {"method": "lora"}}
    try:
        _audit(root, raw)
    except TuneloopError as exc:  # the message names the uploaded file, not the draft folder it was saved in
        import shutil

        shutil.rmtree(root)
        raise type(exc)(str(exc).replace(str(data.resolve()), name).replace(str(data), name)) from None
    write_text(root / "config.yaml", yaml.safe_dump(raw, sort_keys=False))
    return root.name


def free_name(workspace: Path, stem: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "run"
    name, index = stem, 2
    while (workspace / name).exists():
        name, index = f"{stem}-{index}", index + 1
    return name


def _audit(root: Path, raw: dict) -> None:
    """Audit the draft's training file (and its test file, for leakage) before anything trains."""
    from tuneloop.data.audit import AuditOptions, audit_files

    data = raw.get("data") or {}
    train = data.get("train_file")
    if not train or not Path(train).is_file():
        raise DataError(f"data.train_file: {train}: no such file (relative paths start at {Path.cwd()}).")
    files = [train] + [data[k] for k in ("validation_file", "test_file") if data.get(k) and Path(data[k]).is_file()]
    options = AuditOptions(format=data.get("format", "auto"), show_progress=False)
    checks = (data.get("audit") or {}).get("checks")
    if checks:  # the checks the config asks for, as `tuneloop run` will run them
        options.checks = tuple(checks)
    write_json(root / "audit.json", audit_files(files, options))


def apply_form(raw: dict, form: dict[str, str]) -> tuple[dict, str]:
    """The draft config with the form's values (empty means the schema's default) and the run name."""
    raw = yaml.safe_load(yaml.safe_dump(raw))  # a deep copy
    for field in FIELDS:
        if field.key not in form:
            continue
        text = form[field.key].strip()
        value = yaml.safe_load(text) if text and field.kind == "number" else (text or None)
        set_key(raw, field.key, value)
    return raw, form.get("name", "").strip()


def validate_form(workspace: Path, raw: dict, name: str) -> dict[str, str]:
    """Problems by config key ('name' for the run name); empty when the run can start."""
    problems: dict[str, str] = {}
    if not RUN_NAME.match(name):
        problems["name"] = ("name: letters, digits, '.', '_' and '-' only, starting with a letter or digit "
                            f"(got {name!r}).")
    elif (workspace / name).exists():
        problems["name"] = f"name: {workspace / name} already exists; choose another name."
    raw = {**raw, "output_dir": str((workspace / (name or "run")).resolve())}
    try:
        RunConfig.model_validate(raw)
    except ValidationError as exc:
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "config"
            problems.setdefault(key, describe_error(err))
    data = raw.get("data") or {}
    for role in ("train_file", "validation_file", "test_file"):
        if data.get(role) and not Path(data[role]).is_file():
            problems.setdefault(f"data.{role}", f"data.{role}: {data[role]}: no such file.")
    return problems


def start_draft(workspace: Path, draft: str, raw: dict, name: str) -> Job:
    root = draft_dir(workspace, draft)
    raw = {**raw, "output_dir": str((workspace / name).resolve())}
    config = root / f"{name}.yaml"
    write_text(config, yaml.safe_dump(raw, sort_keys=False))
    return start_job(workspace, "run", f"train {name}", [tuneloop_command("run", str(config))], workspace / name)


def audit_lines(audit: dict | None) -> list[dict]:
    return list((audit or {}).get("summary", []))
