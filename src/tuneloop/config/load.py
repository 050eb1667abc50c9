"""Reading a run config: YAML from a file or a run directory, `--set key=value` overrides, and validation.

Every problem is reported at once (tuneloop.config.schema words each one), with the file it came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, NoReturn

import yaml
from pydantic import ValidationError

from tuneloop.config.schema import RunConfig, describe_error
from tuneloop.config.search_space import space_problems
from tuneloop.errors import ConfigError
from tuneloop.workspace import RunDir


def load_config(path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None) -> RunConfig:
    """Read a YAML config, apply `key.path=value` overrides and validate; raise ConfigError listing every problem."""
    raw, source = read_config(path, overrides, base)
    return validate_config(raw, source)


def read_config(
    path: str | Path | None, overrides: list[str] | None = None, base: dict | None = None
) -> tuple[dict[str, Any], str]:
    """The raw config mapping (YAML with overrides applied, not yet validated) and where it came from."""
    raw: dict[str, Any] = dict(base or {})
    source = "config"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"{path}: no such config file. Create one with `tuneloop init {path}`.")
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{path}:{mark.line + 1}" if mark else str(path)
            raise ConfigError(f"{where}: not valid YAML ({getattr(exc, 'problem', exc)}).") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a UTF-8 text file; a config is YAML text.") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of sections (model:, data:, train:, ...).")
        raw.update(loaded)
    for item in overrides or []:
        apply_override(raw, item)
    return raw, source


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set `a.b.c=value` in a nested dict; the value is parsed as YAML (so 1e-4, true, [a, b] work)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.learning_rate=1e-4")
    parts = key.strip().split(".")
    node = raw
    for part in parts[:-1]:
        if isinstance(node, list):  # stages.1.train.epochs or stages.assistant.train.epochs
            node = _list_item(node, part, item)
            continue
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict | list):
            raise ConfigError(f"--set {item!r}: '{part}' is a value, not a section.")
        node = child
    if isinstance(node, list):
        raise ConfigError(f"--set {item!r}: set a key inside a list item, e.g. --set stages.0.train.epochs=2")
    try:
        node[parts[-1]] = yaml.safe_load(value)
    except yaml.YAMLError:
        node[parts[-1]] = value


def _list_item(items: list, part: str, item: str) -> dict:
    found = [entry for index, entry in enumerate(items)
             if isinstance(entry, dict) and (str(index) == part or entry.get("name") == part)]
    if not found:
        raise ConfigError(f"--set {item!r}: no list item '{part}' (give its index from 0, or a stage name).")
    return found[0]


def validate_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    if "stages" in raw:
        raise ConfigError(f"{source}: lists stages (a multi-stage run), and this command takes one stage. Run the "
                          f"stages with `tuneloop run {source}`, or point the command at one stage's run directory.")
    try:
        config = RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise_problems([describe_error(err) for err in exc.errors()], source)
    if config.search is not None:  # the space names config keys: checked against the schema and this config
        problems = space_problems(config)
        if problems:
            raise_problems(problems, source)
    return config


def raise_problems(problems: list[str], source: str) -> NoReturn:
    listed = "\n".join(f"  - {problem}" for problem in problems)
    raise ConfigError(f"{source}: {len(problems)} problem(s):\n{listed}") from None


def load_run_config(run: RunDir) -> RunConfig:
    """The config a run directory was started with (its config.yaml), validated."""
    if not run.config.is_file():
        raise ConfigError(f"{run.root}: no config.yaml, so this is not a run directory. Give the output_dir of a "
                          "run (`tuneloop run CONFIG` writes one).")
    return validate_config(yaml.safe_load(run.config.read_text(encoding="utf-8")) or {}, str(run.config))
