"""GRPO reward functions: the built-ins, and turning `train.rewards` entries into callables TRL's GRPOTrainer calls.

An entry names one of:
    - a built-in: `answer_match` (the last number of the reply equals the reference column, or for a text
      reference the reply contains it; `pattern` extracts the answer by regex instead), `format_regex` (the
      reply matches `pattern`), `json_keys` (the reply is a JSON object with `keys`), `length_penalty`
      (replies over `max_words` lose reward);
    - `module:function` (imported; the current directory is on the import path) or `path/to/file.py:function`;
    - a reward-model run directory (the `reward` recipe's RUN/model/): the score is the model's logit for the
      chat-templated conversation.

Every function is called as TRL calls it, `f(prompts=..., completions=..., completion_ids=..., **columns)`, where
columns are the data's reference columns (one value per reply) plus TRL's `trainer_state`, `log_extra` and
`log_metric`. A function that does not take `**kwargs` is given only the arguments it names. Completions of chat
prompts are lists with one assistant message; `completion_text` turns either shape into the reply's text.

A bad entry is a ConfigError naming `train.rewards[i]`; a function that raises or returns the wrong number of
values during training is a RewardFunctionError naming it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import inspect
import json
import math
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.config.schema import RewardSpec
from tuneloop.errors import ConfigError, TuneloopError

# What TRL passes to every reward function, besides the data columns.
TRL_ARGUMENTS = ("prompts", "completions", "completion_ids", "trainer_state", "log_extra", "log_metric")
DEFAULT_ANSWER_COLUMN = "answer"
DEFAULT_MAX_WORDS = 50
NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?")


class RewardFunctionError(TuneloopError):
    """A reward function failed while scoring replies."""


def completion_text(completion) -> str:
    """The reply's text: a plain string, or the content of a chat completion's messages."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list):
        return "".join(str(m.get("content") or "") for m in completion if isinstance(m, dict))
    return str(completion)


def last_number(text: str) -> float | None:
    """The last number written in the text (thousands separators ignored), or None."""
    found = NUMBER.findall(text.replace(",", ""))
    return float(found[-1]) if found else None


def _as_number(value) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    text = str(value).strip().replace(",", "")
    return float(text) if NUMBER.fullmatch(text) else None


def _normalized(text: str) -> str:
    return " ".join(text.casefold().split())


def answer_is_right(reply: str, reference, pattern: str | None = None) -> bool:
    """Numeric reference: the last number in the reply equals it. Text: the reply contains it (case-insensitive).

    With `pattern`, the answer is what the regex's first group (else its whole match) captures in the reply,
    searched with re.search; a reply it does not match is wrong (a strict format: 'Answer: (-?\\d+)\\s*$').
    """
    if pattern is not None:
        found = re.search(pattern, reply)
        if found is None:
            return False
        reply = found.group(1) if found.groups() else found.group(0)
    number = _as_number(reference)
    if number is not None:
        found = last_number(reply)
        return found is not None and math.isclose(found, number, rel_tol=1e-9, abs_tol=1e-9)
    wanted = _normalized(str(reference))
    return bool(wanted) and wanted in _normalized(reply)


def answer_match(completions, column: str = DEFAULT_ANSWER_COLUMN, pattern: str | None = None,
                 **columns) -> list[float]:
    """1.0 where the reply gets the reference in `column` right (see answer_is_right), else 0.0."""
    if column not in columns:
        raise KeyError(f"no data column {column!r} (columns: {sorted(k for k in columns if k not in TRL_ARGUMENTS)})")
    return [float(answer_is_right(completion_text(c), ref, pattern))
            for c, ref in zip(completions, columns[column], strict=True)]


def format_regex(completions, pattern: str, **_) -> list[float]:
    """1.0 where re.search(pattern, reply) finds a match, else 0.0."""
    compiled = re.compile(pattern)
    return [float(compiled.search(completion_text(c)) is not None) for c in completions]


def json_reply(text: str):
    """The reply parsed as JSON (a ```json fence around it is allowed), or None when it is not JSON."""
    stripped = text.strip()
    fenced = re.fullmatch(r"```(?:json)?\s*(.*?)\s*```", stripped, flags=re.DOTALL)
    try:
        return json.loads(fenced.group(1) if fenced else stripped)
    except (json.JSONDecodeError, ValueError):
        return None


def json_keys(completions, keys: list[str] | None = None, **_) -> list[float]:
    """1.0 for a JSON object holding every key; 0.5 for a JSON object missing some; 0.0 for anything else."""
    scores = []
    for completion in completions:
        parsed = json_reply(completion_text(completion))
        if not isinstance(parsed, dict):
            scores.append(0.0)
        else:
            scores.append(1.0 if all(key in parsed for key in keys or []) else 0.5)
    return scores


def length_penalty(completions, max_words: int = DEFAULT_MAX_WORDS, **_) -> list[float]:
    """0.0 up to max_words words; beyond, minus the share of max_words it runs over (at most -1.0)."""
    scores = []
    for completion in completions:
        words = len(completion_text(completion).split())
        scores.append(-min(1.0, (words - max_words) / max_words) if words > max_words else 0.0)
    return scores


# Built-in name -> (function, the options it takes, the options it needs).
BUILTINS: dict[str, tuple[Callable, tuple[str, ...], tuple[str, ...]]] = {
    "answer_match": (answer_match, ("column", "pattern"), ()),
    "format_regex": (format_regex, ("pattern",), ("pattern",)),
    "json_keys": (json_keys, ("keys",), ("keys",)),
    "length_penalty": (length_penalty, ("max_words",), ()),
}
OPTIONS = ("column", "pattern", "keys", "max_words")


@dataclass
class RewardFunction:
    """One configured reward: calls the function as TRL does and turns its failures into clear errors."""

    key: str  # train.rewards[i], for messages
    name: str  # shown in TRL's logs as rewards/<name>/mean and in metrics.json
    function: Callable
    weight: float = 1.0
    options: dict = field(default_factory=dict)  # a built-in's options (pattern, keys, ...)
    accepted: tuple[str, ...] | None = None  # the keyword arguments it takes; None: any (**kwargs)
    required: tuple[str, ...] = ()  # the ones it needs

    def __post_init__(self) -> None:
        self.__name__ = self.name  # TRL names its reward columns after __name__

    def check_columns(self, columns: list[str]) -> None:
        """ConfigError when the function needs an argument neither TRL nor the data (these columns) supplies."""
        missing = [name for name in self.required if name not in TRL_ARGUMENTS and name not in columns]
        if missing:
            raise ConfigError(
                f"{self.key} ({self.name}): needs argument(s) {missing}, which are neither data columns (the data has "
                f"{sorted(columns)}) nor arguments TRL passes ({', '.join(TRL_ARGUMENTS)}). Add the column to the "
                "data, or give the parameter a default."
            )
        column = self.options.get("column")
        if self.function is answer_match and (column or DEFAULT_ANSWER_COLUMN) not in columns:
            raise ConfigError(
                f"{self.key} (answer_match): the data has no column {column or DEFAULT_ANSWER_COLUMN!r} to compare "
                f"replies with (columns: {sorted(columns)}). Set {self.key}.column to the one holding the reference."
            )

    def __call__(self, prompts=None, completions=None, completion_ids=None, **columns) -> list[float | None]:
        arguments = {"prompts": prompts, "completions": completions, "completion_ids": completion_ids, **columns}
        if self.accepted is not None:
            arguments = {k: v for k, v in arguments.items() if k in self.accepted}
        try:
            values = self.function(**arguments, **self.options)
        except TuneloopError:
            raise
        except Exception as exc:
            raise RewardFunctionError(
                f"{self.key}: the reward function {self.name} raised {type(exc).__name__}: {exc}. Fix the function (or "
                "remove it from train.rewards); the run can continue from its last checkpoint with --resume."
            ) from exc
        return self._checked(values, len(completions))

    def _checked(self, values, expected: int) -> list[float | None]:
        try:
            values = list(values)
        except TypeError:
            raise RewardFunctionError(f"{self.key}: the reward function {self.name} returned "
                                      f"{type(values).__name__}, not a list of numbers (one per reply).") from None
        if len(values) != expected:
            raise RewardFunctionError(
                f"{self.key}: the reward function {self.name} returned {len(values)} value(s) for {expected} replies; "
                "it must return one number (or None to skip) per reply, in order."
            )
        checked = []
        for index, value in enumerate(values):
            if value is None:
                checked.append(None)
                continue
            try:
                checked.append(float(value))
            except (TypeError, ValueError):
                raise RewardFunctionError(f"{self.key}: the reward function {self.name} returned {value!r} for reply "
                                          f"{index}; each value must be a number or None.") from None
        return checked


def resolve_rewards(specs: list[RewardSpec], key: str = "train.rewards") -> list[RewardFunction]:
    """Every entry as a RewardFunction; one ConfigError lists every bad entry (each named `train.rewards[i]`)."""
    functions, problems = [], []
    names: dict[str, int] = {}
    for index, spec in enumerate(specs):
        where = f"{key}[{index}]"
        try:
            function = _resolve(spec, where)
        except ConfigError as exc:
            problems.append(str(exc))
            continue
        names[function.name] = names.get(function.name, 0) + 1
        if names[function.name] > 1:  # TRL logs per name: two answer_match entries must not share a column
            function.name = f"{function.name}_{names[function.name]}"
            function.__name__ = function.name
        functions.append(function)
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise ConfigError(f"{key}: {len(problems)} problem(s):\n{listed}")
    return functions


def _resolve(spec: RewardSpec, where: str) -> RewardFunction:
    target = spec.function.strip()
    options = {name: getattr(spec, name) for name in OPTIONS if getattr(spec, name) is not None}
    if target in BUILTINS:
        function, takes, needs = BUILTINS[target]
        wrong = [name for name in options if name not in takes]
        if wrong:
            raise ConfigError(f"{where}: {target} takes no option {', '.join(wrong)} (it takes: "
                              f"{', '.join(takes) or 'none'}).")
        lacking = [name for name in needs if name not in options]
        if lacking:
            raise ConfigError(f"{where}: {target} needs {', '.join(lacking)}, e.g. "
                              + _example(target, where) + ".")
        if "pattern" in options:
            try:
                re.compile(options["pattern"])
            except re.error as exc:
                raise ConfigError(f"{where}.pattern: not a valid regular expression ({exc}).") from None
        return RewardFunction(where, target, function, spec.weight, options)
    if options:
        raise ConfigError(f"{where}: options {', '.join(options)} belong to the built-ins; a function of your own "
                          "reads what it needs from the data columns.")
    directory = Path(target)
    if directory.is_dir():
        return _reward_model_function(directory, where, spec.weight)
    if ":" in target:
        return _imported_function(target, where, spec.weight)
    close = difflib.get_close_matches(target, list(BUILTINS), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(
        f"{where}: {target!r} is not a built-in reward ({', '.join(BUILTINS)}), a 'module:function' or "
        f"'file.py:function', or a reward-model run directory (no such directory).{hint}"
    )


def _example(target: str, where: str) -> str:
    return {"format_regex": f"{where}: {{function: format_regex, pattern: 'Answer: \\\\d+$'}}",
            "json_keys": f"{where}: {{function: json_keys, keys: [name, age]}}"}.get(target, "")


def _imported_function(target: str, where: str, weight: float) -> RewardFunction:
    module_name, _, attribute = target.rpartition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{where}: {target!r}: expected 'module:function' or 'path/to/file.py:function'.")
    try:
        module = _load_module(module_name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except Exception as exc:  # the user's module failed while importing
        raise ConfigError(f"{where}: importing {module_name} raised {type(exc).__name__}: {exc}.") from None
    function = getattr(module, attribute, None)
    if function is None:
        defined = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise ConfigError(f"{where}: {module_name} has no function {attribute!r} (it defines: "
                          f"{', '.join(defined) or 'no functions'}).")
    if not callable(function):
        raise ConfigError(f"{where}: {target} is a {type(function).__name__}, not a function.")
    accepted, required = _parameters(function, where, target)
    return RewardFunction(where, attribute, function, weight, accepted=accepted, required=required)


def _load_module(name: str):
    if name.endswith(".py") or "/" in name or "\\" in name:
        path = Path(name)
        if not path.is_file():
            raise ConfigError(f"{name}: no such file (relative paths start at the current directory, {Path.cwd()}).")
        spec = importlib.util.spec_from_file_location(f"tuneloop_rewards_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    cwd = str(Path.cwd())
    if cwd not in sys.path:
        sys.path.insert(0, cwd)  # as `python -m` would: a module beside the config is importable
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name and name.startswith(exc.name):
            raise ConfigError(f"no module named {name!r} (looked in the current directory, {cwd}, and the "
                              "installed packages). Give a file path instead: path/to/file.py:function.") from None
        raise


def _parameters(function: Callable, where: str, target: str) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """(the keyword arguments it accepts, None for **kwargs; those without a default)."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return None, ()
    positional_only = [p.name for p in parameters if p.kind is inspect.Parameter.POSITIONAL_ONLY
                       and p.default is inspect.Parameter.empty]
    if positional_only:
        raise ConfigError(f"{where}: {target} takes {positional_only} positional-only; TRL passes every argument by "
                          "name. Define it as def f(prompts, completions, **kwargs).")
    by_name = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    named = [p for p in parameters if p.kind in by_name]
    required = tuple(p.name for p in named if p.default is inspect.Parameter.empty)
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters) and "completions" not in (
        p.name for p in named
    ):
        raise ConfigError(f"{where}: {target} takes no 'completions' argument, so it cannot see the replies. TRL "
                          "calls f(prompts=..., completions=..., completion_ids=..., **columns): define it as "
                          "def f(completions, **kwargs) returning one number per reply.")
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None, required
    return tuple(p.name for p in named), required


def _reward_model_function(directory: Path, where: str, weight: float) -> RewardFunction:
    model_dir = directory / "model" if (directory / "model" / "config.json").is_file() else directory
    if not (model_dir / "config.json").is_file():
        raise ConfigError(f"{where}: {directory} is a directory but holds no reward model (expected a reward run's "
                          "model/ with config.json, from `train.recipe: reward`).")
    scorer = RewardModelReward(model_dir)
    return RewardFunction(where, f"reward_model_{directory.resolve().name}", scorer, weight,
                          accepted=("prompts", "completions"), required=("prompts", "completions"))


class RewardModelReward:
    """Scores replies with a reward model (loaded on first use): the logit of the chat-templated conversation."""

    def __init__(self, model_dir: Path, device: str = "cpu") -> None:
        self.model_dir = model_dir
        self.device = device
        self.scorer = None

    def __call__(self, prompts, completions) -> list[float]:
        if self.scorer is None:
            self.scorer = load_scorer(self.model_dir, self.device)
        conversations = [p if isinstance(p, list) else [{"role": "user", "content": str(p)}] for p in prompts]
        return self.scorer.score(conversations, [completion_text(c) for c in completions])


def load_scorer(model_dir: Path, device: str = "cpu"):
    """The reward recipe's scorer for a reward run (or its model/ folder): tuneloop.models.reward_scorer."""
    from tuneloop.models.reward_scorer import load_reward_scorer

    return load_reward_scorer(str(model_dir), device=device)
