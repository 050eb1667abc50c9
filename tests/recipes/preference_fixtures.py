"""Small preference data for the preference-recipe tests: a careful reply preferred over a curt, wrong one."""

from __future__ import annotations

from pathlib import Path

from conftest import FACTS, write_jsonl

CURT = ("No idea.", "Ask someone else.", "Go away.", "Not my problem.", "Whatever.", "Figure it out.")


def preference_pairs(repeat: int = 4) -> list[dict]:
    rows = []
    for copy in range(repeat):
        for index, (question, answer, _) in enumerate(FACTS):
            rows.append({"prompt": question if copy % 2 == 0 else f"Please tell me: {question}",
                         "chosen": answer, "rejected": CURT[(index + copy) % len(CURT)]})
    return rows


def write_pairs(directory: Path, repeat: int = 4) -> dict[str, Path]:
    train = write_jsonl(directory / "pairs.jsonl", preference_pairs(repeat))
    test = write_jsonl(directory / "pairs_test.jsonl", [
        {"prompt": f"Tell me, {q.lower()}", "chosen": a, "rejected": CURT[i]} for i, (q, a, _) in enumerate(FACTS)])
    return {"train": train, "test": test}


def preference_config(tiny_config: dict, files: dict[str, Path], recipe: str = "dpo", **train) -> dict:
    tiny_config["data"] = {"train_file": str(files["train"]), "test_file": str(files["test"]), "max_length": 48}
    tiny_config["train"].update(recipe=recipe, epochs=1, max_steps=6, batch_size=4, learning_rate=5e-3,
                                eval_every=3, save_every=3, early_stopping_patience=None, logging_steps=1, **train)
    tiny_config["evaluate"] = {"max_new_tokens": 4, "batch_size": 8, "max_samples": 6}
    return tiny_config
