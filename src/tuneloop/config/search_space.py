"""The `search.space` config block: parse it and check every key and range against the run config's schema.

Each entry maps a dotted config key to a distribution:

    train.learning_rate: {log_uniform: [1.0e-5, 1.0e-3]}
    train.warmup_ratio:  {uniform: [0.0, 0.2]}          # optional step: 0.05
    train.epochs:        {int: [1, 6]}                  # optional step: 2, log: true
    train.lora.rank:     {choice: [8, 16, 32]}

Keys are checked against the RunConfig schema, ranges against each key's own limits (by validating the
config with the range's ends and every choice put in), and the grid sampler takes listed values only.
Nested mappings (what `--set search.space.train.epochs.int=[1,3]` builds) are read like dotted keys.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from tuneloop.config.schema import RunConfig, describe_error

KINDS = ("log_uniform", "uniform", "int", "choice")
SHAPES = "{log_uniform: [lo, hi]}, {uniform: [lo, hi]}, {int: [lo, hi]} or {choice: [a, b, ...]}"
# The held-out data and where results go must stay the same across trials, or their objectives compare nothing.
UNSEARCHABLE = ("output_dir", "search", "tracking", "data.train_file", "data.validation_file", "data.test_file",
                "data.test_size", "data.validation_size", "data.max_validation_examples")


@dataclass(frozen=True)
class Param:
    """One searched key and its distribution."""

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None
    log: bool = False
    choices: tuple = ()

    def describe(self) -> str:
        if self.kind == "choice":
            return f"one of {list(self.choices)}"
        scale = "log-uniform" if self.kind == "log_uniform" or self.log else "uniform"
        whole = " whole numbers" if self.kind == "int" else ""
        return f"{scale}{whole} in [{self.low}, {self.high}]" + (f" step {self.step}" if self.step else "")


def parse_space(space: dict[str, Any]) -> tuple[list[Param], list[str]]:
    """The parameters, and every problem with their shapes (each message starts with search.space.KEY)."""
    params, problems = [], []
    for key, spec in flatten_space(space).items():
        where = f"search.space.{key}"
        if not isinstance(spec, dict):
            problems.append(f"{where}: expected {SHAPES} (got {spec!r}).")
            continue
        kinds = [k for k in spec if k in KINDS]
        extra = [k for k in spec if k not in KINDS + ("step", "log")]
        if len(kinds) != 1 or extra:
            problems.append(f"{where}: expected exactly one of {SHAPES}, optionally with step (uniform, int) or "
                            f"log (int) (got {spec!r}).")
            continue
        kind = kinds[0]
        param, problem = _parse_one(key, kind, spec)
        if problem:
            problems.append(f"{where}: {problem}")
        else:
            params.append(param)
    if not space:
        problems.append("search.space: empty; name at least one config key to vary, e.g. "
                        "train.learning_rate: {log_uniform: [1.0e-5, 1.0e-3]}.")
    return params, problems


def flatten_space(space: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"train": {"epochs": {"int": [1, 3]}}} -> {"train.epochs": {"int": [1, 3]}}; dotted keys pass through."""
    flat: dict[str, Any] = {}
    for key, value in space.items():
        nested = isinstance(value, dict) and value and all(isinstance(v, dict) for v in value.values())
        if nested and not any(k in KINDS for k in value):
            flat.update(flatten_space(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _parse_one(key: str, kind: str, spec: dict) -> tuple[Param | None, str | None]:
    value, step, log = spec[kind], spec.get("step"), spec.get("log", False)
    if step is not None and kind not in ("uniform", "int"):
        return None, f"step applies to uniform and int ranges, not {kind}."
    if "log" in spec and kind != "int":
        return None, f"log applies to int ranges; for floats write {{log_uniform: [lo, hi]}} (got {spec!r})."
    if kind == "choice":
        if not isinstance(value, list) or not value:
            return None, f"choice takes a non-empty list of values (got {value!r})."
        plain = [v for v in value if v is None or isinstance(v, bool | int | float | str)]
        if len(plain) != len(value):
            return None, f"choices must be plain values (numbers, strings, true/false, null) (got {value!r})."
        if len({repr(v) for v in value}) != len(value):
            return None, f"choice lists a value twice (got {value!r})."
        return Param(key, kind, choices=tuple(value)), None
    if not (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)):
        return None, f"{kind} takes [lo, hi], two numbers (got {value!r})."
    low, high = value
    if not low < high:
        return None, f"empty range: lo must be below hi (got [{low}, {high}])."
    if kind == "log_uniform" and low <= 0:
        return None, f"log_uniform needs lo > 0: the logarithm of {low} is undefined (got [{low}, {high}])."
    if kind == "int":
        if not all(isinstance(v, int) for v in value):
            return None, f"int takes whole-number ends (got [{low}, {high}]); for fractions use uniform."
        if step is not None and (not isinstance(step, int) or step < 1):
            return None, f"an int range's step is a whole number >= 1 (got {step!r})."
        if log and step not in (None, 1):
            return None, "an int range cannot have both log and a step above 1."
        if log and low < 1:
            return None, f"a log int range needs lo >= 1 (got {low})."
        if not isinstance(log, bool):
            return None, f"log is true or false (got {log!r})."
    elif step is not None and (not isinstance(step, int | float) or step <= 0 or step > high - low):
        return None, f"step must be a positive number no larger than hi - lo (got {step!r})."
    if step is not None and abs((high - low) / step - round((high - low) / step)) > 1e-9:
        return None, f"hi - lo must be a whole number of steps (got [{low}, {high}] with step {step}); Optuna " \
                     "would silently cut the range."
    return Param(key, kind, low, high, step, bool(log)), None


def space_problems(config: RunConfig) -> list[str]:
    """Every problem with config.search: unknown or unsearchable keys, bad shapes, values the key itself refuses,
    and a grid over continuous ranges. Empty when all is well."""
    search = config.search
    params, problems = parse_space(search.space)
    base = config.model_dump(mode="json")
    base.pop("search", None)
    for param in params:
        where = f"search.space.{param.key}"
        problem = _key_problem(param.key)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        if param.kind in ("uniform", "log_uniform") and _leaf_type(param.key) is int:
            problems.append(f"{where}: {param.key} takes whole numbers; use {{int: [lo, hi]}} or {{choice: [...]}}.")
            continue
        values = list(param.choices) if param.kind == "choice" else [param.low, param.high]
        for value in values:
            refused = _refused(base, param.key, value)
            if refused:
                problems.append(f"{where}: {value!r} is outside what {param.key} accepts: {refused}")
                break
        if search.sampler == "grid" and param.kind in ("uniform", "log_uniform"):
            problems.append(f"{where}: the grid sampler needs listed values, and {param.kind} is a continuous range; "
                            "write {choice: [...]} (or an int range), or pick another sampler.")
    return problems


def _key_problem(key: str) -> str | None:
    """Why a dotted key cannot be searched, or None."""
    for blocked in UNSEARCHABLE:
        if key == blocked or key.startswith(blocked + "."):
            return ("not searchable: the data a trial is judged on, the output directory, tracking and the search "
                    "itself stay fixed across trials.")
    model: type[BaseModel] = RunConfig
    parts = key.split(".")
    for depth, part in enumerate(parts):
        fields = model.model_fields
        if part not in fields:
            here = ".".join(parts[:depth])
            known = [f"{here}.{name}" if here else name for name in fields]
            close = difflib.get_close_matches(key, all_leaf_keys(), n=1) or difflib.get_close_matches(
                ".".join(parts[: depth + 1]), known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            return f"not a config key.{hint} Keys under {here or 'the top level'}: {', '.join(fields)}."
        section = _section_model(fields[part].annotation)
        if section is None:
            if depth != len(parts) - 1:
                return f"'{'.'.join(parts[: depth + 1])}' is a value, not a section."
            return None
        model = section
    example = next(iter(model.model_fields))
    return f"'{key}' is a section, not a value; name a key inside it, e.g. {key}.{example}."


def _section_model(annotation) -> type[BaseModel] | None:
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def all_leaf_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    keys = []
    for name, field in model.model_fields.items():
        section = _section_model(field.annotation)
        keys += all_leaf_keys(section, f"{prefix}{name}.") if section else [f"{prefix}{name}"]
    return keys


def _leaf_type(key: str) -> type | None:
    model: type[BaseModel] = RunConfig
    parts = key.split(".")
    for part in parts[:-1]:
        model = _section_model(model.model_fields[part].annotation)
    annotation = model.model_fields[parts[-1]].annotation
    return annotation if annotation in (int, float, bool, str) else None


def _refused(base: dict, key: str, value) -> str | None:
    """The schema's complaint about `key: value` in this config, or None when it accepts it."""
    try:
        RunConfig.model_validate(with_values(base, {key: value}))
    except ValidationError as exc:
        mine = [err for err in exc.errors() if ".".join(str(p) for p in err["loc"]) == key]
        return describe_error((mine or exc.errors())[0]).split(": ", 1)[-1]
    return None


def with_values(raw: dict, values: dict[str, Any]) -> dict:
    """A deep copy of a raw config with each dotted key set to its value."""
    out = copy.deepcopy(raw)
    for key, value in values.items():
        node = out
        *sections, last = key.split(".")
        for part in sections:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[last] = value
    return out
