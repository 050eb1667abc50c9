"""Writes the GRPO demo task: arithmetic word problems with a programmatic checker (the last number is the answer).

Every problem is one or two steps of whole-number arithmetic about people and things, worded by our
own templates (no benchmark text), with its answer in an ``answer`` column. The reply is graded by
`tuneloop.train.rewards.answer_match`: the last number in the reply must equal the answer, or, with the
strict pattern the shipped configs use, the reply must end with ``Answer: <number>`` as the prompt asks.
An untuned small model often works the sum out but rambles past the reply budget, never writes the
``Answer:`` line, picks the wrong operation or gets the arithmetic wrong, so the checker's accuracy has
room to rise and GRPO has right and wrong samples to compare.

Train and test problems are disjoint: each problem is keyed by its template and numbers, and a key
lands on one side only, so a held-out problem is never a reworded training problem with the same
numbers. The generator is seeded: the same seed writes the same files.

Run ``python -m tuneloop.demos.arithmetic [OUT_DIR] [--train N] [--test N] [--seed S]`` to write
``train.jsonl`` and ``test.jsonl`` (default ``examples/data/arithmetic``).
"""

from __future__ import annotations

import argparse
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from tuneloop.workspace import write_jsonl

DEFAULT_OUT_DIR = Path("examples/data/arithmetic")
INSTRUCTION = "Solve the problem. Keep it short and end your reply with 'Answer: <number>'."
NAMES = ("Mira", "Tomas", "Ada", "Kofi", "Lena", "Ravi", "Ines", "Oskar", "Yuki", "Sami", "Noor", "Pablo",
         "Greta", "Idris", "Hana", "Bruno")
THINGS = ("apples", "stickers", "marbles", "books", "pencils", "shells", "stamps", "cookies", "coins", "cards")


@dataclass(frozen=True)
class Template:
    key: str
    text: str  # {name}, {other}, {thing}, {a}, {b}, {c}
    answer: object  # (a, b, c) -> int
    numbers: object  # rng -> (a, b, c)


def _small(rng: random.Random) -> tuple[int, int, int]:
    return rng.randint(2, 20), rng.randint(2, 20), rng.randint(2, 9)


def _take_away(rng: random.Random) -> tuple[int, int, int]:
    a = rng.randint(8, 30)
    return a, rng.randint(2, a - 2), rng.randint(2, 9)


def _times(rng: random.Random) -> tuple[int, int, int]:
    return rng.randint(2, 9), rng.randint(2, 9), rng.randint(2, 9)


def _two_step(rng: random.Random) -> tuple[int, int, int]:
    a = rng.randint(5, 20)
    return a, rng.randint(2, 10), rng.randint(2, a - 1)


TEMPLATES = (
    Template("add", "{name} has {a} {thing}. {other} gives {name} {b} more. How many {thing} does {name} have now?",
             lambda a, b, c: a + b, _small),
    Template("sub", "{name} had {a} {thing} and gave {b} of them to {other}. How many {thing} does {name} have left?",
             lambda a, b, c: a - b, _take_away),
    Template("mul", "{name} fills {a} boxes with {b} {thing} in each box. How many {thing} is that in all?",
             lambda a, b, c: a * b, _times),
    Template("add_sub", "{name} has {a} {thing}, buys {b} more, then loses {c}. How many {thing} does {name} have?",
             lambda a, b, c: a + b - c, _two_step),
    Template("together", "{name} collected {a} {thing} and {other} collected {b}. How many {thing} did they collect "
             "together?", lambda a, b, c: a + b, _small),
    Template("left", "A jar held {a} {thing}. {name} took out {b}. How many {thing} are still in the jar?",
             lambda a, b, c: a - b, _take_away),
)


def problem_rows(count: int, rng: random.Random, taken: set[tuple]) -> list[dict]:
    """`count` problems whose (template, numbers) keys are not in `taken`; the new keys are added to it."""
    rows: list[dict] = []
    attempts = 0
    while len(rows) < count:
        attempts += 1
        if attempts > 100 * count + 1000:
            raise ValueError(f"could not draw {count} distinct problems; ask for fewer")
        template = rng.choice(TEMPLATES)
        a, b, c = template.numbers(rng)
        key = (template.key, a, b, c if "{c}" in template.text else None)
        if key in taken:
            continue
        taken.add(key)
        name, other = rng.sample(NAMES, 2)
        question = template.text.format(name=name, other=other, thing=rng.choice(THINGS), a=a, b=b, c=c)
        rows.append({"prompt": f"{question}\n{INSTRUCTION}", "answer": str(template.answer(a, b, c))})
    return rows


def demo_rows(train: int = 400, test: int = 100, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Train and test rows with disjoint problems (test drawn first, so its rows do not depend on `train`)."""
    rng = random.Random(seed)
    taken: set[tuple] = set()
    test_rows = problem_rows(test, rng, taken)
    return problem_rows(train, rng, taken), test_rows


def write_demo_data(out_dir: Path, train: int = 400, test: int = 100, seed: int = 0) -> dict[str, Path]:
    train_rows, test_rows = demo_rows(train, test, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"train": out_dir / "train.jsonl", "test": out_dir / "test.jsonl"}
    write_jsonl(paths["train"], train_rows)
    write_jsonl(paths["test"], test_rows)
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", nargs="?", type=Path, default=DEFAULT_OUT_DIR)
    parser.add_argument("--train", type=int, default=400)
    parser.add_argument("--test", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for split, path in write_demo_data(args.out_dir, args.train, args.test, args.seed).items():
        print(f"{split}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
