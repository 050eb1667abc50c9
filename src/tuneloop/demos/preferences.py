"""Write the preference demo data: Brambleway Cycles answers people preferred, and ones they did not.

Built from the quickstart's facts (tuneloop.demos.quickstart): for each training question the preferred reply
is the correct, courteous policy statement; the rejected reply is one of our own unhelpful replies
(a brush-off, a guess at another policy, a rude redirect). The held-out pairs use the paraphrased
test questions, so no test prompt is seen in training.

    python -m tuneloop.demos.preferences [OUT_DIR]   # default examples/data/brambleway

writes preferences.jsonl (pairs, for dpo/cpo/simpo/orpo and reward), preferences_test.jsonl (held-out
pairs) and feedback.jsonl (unpaired thumbs up/down rows, for kto: each prompt gets one verdict, as a
feedback log would).
"""

from __future__ import annotations

import sys
from pathlib import Path

from tuneloop.demos.quickstart import DEFAULT_OUT_DIR, FACTS, SYSTEM_PROMPT
from tuneloop.workspace import write_jsonl

# Our own unhelpful replies: what a careless assistant says instead of the policy.
BRUSH_OFFS = (
    "I don't know, check the website.",
    "That's not something I can help with.",
    "Just call the shop, they might know.",
    "No idea, sorry. Anything else?",
    "Why would you need to know that?",
    "You'll have to figure that out yourself.",
)


def _prompt(question: str) -> list[dict]:
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": question}]


def _rejected(fact_index: int, question_index: int) -> str:
    """A brush-off, or (every third question) another topic's policy stated as if it answered this one."""
    if question_index % 3 == 2:
        return FACTS[(fact_index + 1) % len(FACTS)].statement
    return BRUSH_OFFS[(fact_index + question_index) % len(BRUSH_OFFS)]


def preference_rows() -> tuple[list[dict], list[dict], list[dict]]:
    """(training pairs, held-out pairs, unpaired feedback rows) in FACTS order."""
    train, test, feedback = [], [], []
    for f, fact in enumerate(FACTS):
        for q, question in enumerate(fact.train_questions):
            pair = {"prompt": _prompt(question), "chosen": fact.statement, "rejected": _rejected(f, q)}
            train.append(pair)
            good = (f + q) % 2 == 0
            feedback.append({"prompt": pair["prompt"], "completion": pair["chosen" if good else "rejected"],
                             "label": good})
        for q, question in enumerate(fact.test_questions):
            test.append({"prompt": _prompt(question), "chosen": fact.statement, "rejected": _rejected(f, q + 1)})
    return train, test, feedback


def write_preference_data(out_dir: Path) -> dict[str, Path]:
    out_dir = Path(out_dir)
    train, test, feedback = preference_rows()
    paths = {"pairs": out_dir / "preferences.jsonl", "test": out_dir / "preferences_test.jsonl",
             "feedback": out_dir / "feedback.jsonl"}
    for rows, path in ((train, paths["pairs"]), (test, paths["test"]), (feedback, paths["feedback"])):
        write_jsonl(path, rows)
    return paths


def main(argv: list[str] | None = None) -> int:
    out_dir = Path(argv[0]) if argv else DEFAULT_OUT_DIR
    for name, path in write_preference_data(out_dir).items():
        print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
