"""Which weights answer a request: model ids from run directories, --name aliases, and --split A/B routing.

A model id is a run directory's name, or ALIAS from `--name ALIAS=RUN_DIR`. `--split ALIAS=A:90,B:10` makes
ALIAS answer from A for 90% of users and from B for 10%: each `user` is hashed (sha256 of alias and user) to a
point in [0, 1), so the same user always gets the same variant and moving weights moves as few users as
possible. A request without `user` gets a fresh random draw. The variant is the model id that answered.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from pathlib import Path

from tuneloop.errors import ConfigError


@dataclass(frozen=True)
class Split:
    alias: str
    variants: tuple[tuple[str, float], ...]  # (target: model id or run directory, weight)


def parse_name(text: str) -> tuple[str, Path]:
    alias, sep, path = text.partition("=")
    if not sep or not alias.strip() or not path.strip():
        raise ConfigError(f"--name {text!r}: write ALIAS=RUN_DIR, e.g. --name support-bot=runs/quickstart")
    return alias.strip(), Path(path.strip())


def parse_split(text: str) -> Split:
    """'ALIAS=RUN_A:90,RUN_B:10' as a Split, or a ConfigError that shows the form."""
    example = "e.g. --split bot=runs/a:90,runs/b:10"
    alias, sep, rest = text.partition("=")
    if not sep or not alias.strip() or not rest.strip():
        raise ConfigError(f"--split {text!r}: write ALIAS=RUN_A:WEIGHT,RUN_B:WEIGHT, {example}")
    variants = []
    for part in rest.split(","):
        target, colon, weight = part.strip().rpartition(":")
        try:
            value = float(weight)
        except ValueError:
            value = -1.0
        if not colon or not target or value < 0:
            raise ConfigError(f"--split {text!r}: {part.strip()!r} is not RUN:WEIGHT with a weight >= 0, {example}")
        variants.append((target, value))
    if len(variants) < 2 or sum(w for _, w in variants) <= 0:
        raise ConfigError(f"--split {text!r}: give at least two variants with weights summing above 0, {example}")
    return Split(alias.strip(), tuple(variants))


def sticky_point(alias: str, user: str) -> float:
    """The user's fixed point in [0, 1) for this alias."""
    digest = hashlib.sha256(f"{alias}\0{user}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def hash_user(user: str | None) -> str | None:
    """What the store keeps of a user id: a hash, so stored rows group by user without naming them."""
    return None if user is None else hashlib.sha256(user.encode()).hexdigest()[:16]


class Router:
    """Map a requested model name (and user) to the model id that answers and the variant to record."""

    def __init__(self, model_ids: list[str], splits: dict[str, list[tuple[str, float]]]):
        self.model_ids = list(model_ids)
        self.splits = splits
        self._random = random.Random()

    def names(self) -> list[str]:
        return self.model_ids + [alias for alias in self.splits if alias not in self.model_ids]

    def route(self, name: str, user: str | None) -> str | None:
        """The model id that answers `name` for `user`, or None for an unknown name."""
        variants = self.splits.get(name)
        if variants is None:
            return name if name in self.model_ids else None
        total = sum(weight for _, weight in variants)
        point = sticky_point(name, user) if user is not None else self._random.random()
        edge = 0.0
        for model_id, weight in variants:
            edge += weight / total
            if point < edge:
                return model_id
        return variants[-1][0]


def model_id_for(path: Path) -> str:
    return path.resolve().name


def plan_models(run_dirs: list[Path], names: list[str], splits: list[str]) -> tuple[dict[str, Path], dict]:
    """The model ids to serve (id -> run directory) and the splits (alias -> [(model id, weight)])."""
    served: dict[str, Path] = {}

    def add(model_id: str, path: Path) -> None:
        if model_id in served and served[model_id].resolve() != path.resolve():
            raise ConfigError(f"two runs would be served as {model_id!r} ({served[model_id]} and {path}); "
                              f"name one with --name OTHER={path}")
        served[model_id] = path

    for path in run_dirs:
        add(model_id_for(path), path)
    for text in names:
        alias, path = parse_name(text)
        # --name renames a run given positionally rather than serving it twice.
        if model_id_for(path) in served and served[model_id_for(path)].resolve() == path.resolve():
            del served[model_id_for(path)]
        add(alias, path)
    routes: dict[str, list[tuple[str, float]]] = {}
    by_path = {path.resolve(): model_id for model_id, path in served.items()}
    for text in splits:
        split = parse_split(text)
        if split.alias in served:
            raise ConfigError(f"--split {text!r}: {split.alias!r} is already a model id; pick another alias")
        variants = []
        for target, weight in split.variants:
            if target in served:
                variants.append((target, weight))
                continue
            path = Path(target)
            if not path.is_dir():
                raise ConfigError(f"--split {text!r}: {target!r} is neither a served model id "
                                  f"({', '.join(served) or 'none yet'}) nor a run directory")
            model_id = by_path.get(path.resolve()) or model_id_for(path)
            add(model_id, path)
            by_path[path.resolve()] = model_id
            variants.append((model_id, weight))
        routes[split.alias] = variants
    return served, routes

