"""The quickstart's committed data is exactly what the generator writes, and its held-out questions are new."""

from __future__ import annotations

from pathlib import Path

from tuneloop.demos.quickstart import demo_rows, write_demo_data

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data" / "brambleway"


def test_committed_demo_files_match_the_generator(tmp_path):
    written = write_demo_data(tmp_path)
    for split, path in written.items():
        assert (EXAMPLES / f"{split}.jsonl").read_text() == path.read_text(), (
            f"examples/data/brambleway/{split}.jsonl is stale: run `python -m tuneloop.demos.quickstart`"
        )


def test_no_held_out_question_appears_in_training():
    train, test = demo_rows()
    seen = {row["messages"][1]["content"].lower().strip() for row in train}
    assert len(test) >= 50
    assert not [row for row in test if row["messages"][1]["content"].lower().strip() in seen]
    assert all(row["answer"] in row["messages"][-1]["content"] for row in train + test)
