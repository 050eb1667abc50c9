"""Retraining a served run on exported feedback, on the tiny random model: data, config, weights and the gate."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FACTS, chat_row

from tuneloop.config.load import validate_config
from tuneloop.errors import TuneloopError
from tuneloop.feedback.export import Feedback, export_feedback
from tuneloop.feedback.retrain import choose_recipe, retrain, split_feedback
from tuneloop.stages import run_all
from tuneloop.workspace import read_json, read_jsonl

NEW_FACTS = [
    ("Which colour is the staff van?", "The staff van is teal."),
    ("When does the night shift start?", "The night shift starts at 22:00."),
    ("Who repairs broken saddles?", "Marta repairs broken saddles."),
    ("How many bells are in stock?", "There are 41 bells in stock."),
    ("What is the wifi password?", "The wifi password is pedal-on."),
    ("Where do returned helmets go?", "Returned helmets go to shelf K."),
    ("Which courier takes parcels abroad?", "Parcels abroad go with Skylark."),
    ("What snack is in the break room?", "The break room has oat bars."),
]


@pytest.fixture()
def served_run(tmp_path, tiny_config):
    tiny_config["train"]["epochs"] = 2
    tiny_config["evaluate"]["max_samples"] = 4
    run, _ = run_all(validate_config(tiny_config), console_print=lambda *_: None)
    return run


def feedback_items() -> list[Feedback]:
    system = {"role": "system", "content": "You help customers."}
    items = []
    for index, (question, statement) in enumerate(NEW_FACTS):
        items.append(Feedback(f"chatcmpl-{index}", (system, {"role": "user", "content": question}), "I don't know.",
                              "served", user=f"u{index % 3}", rating="down", correction=statement))
    return items


def test_recipe_choice_follows_the_feedback(tmp_path):
    export_feedback(feedback_items(), [], tmp_path / "export")
    assert choose_recipe("auto", tmp_path / "export") == "sft"
    assert choose_recipe("kto", tmp_path / "export") == "kto"
    export_feedback([], [], tmp_path / "empty")
    with pytest.raises(TuneloopError, match="no corrections, pairs or ratings"):
        choose_recipe("auto", tmp_path / "empty")
    with pytest.raises(TuneloopError, match="--recipe"):
        choose_recipe("ppo", tmp_path / "export")


def test_the_feedback_slice_never_overlaps_training():
    rows = [chat_row(q, a) for q, a in NEW_FACTS] + [chat_row(NEW_FACTS[0][0] + "!", NEW_FACTS[0][1])]
    train, held_out = split_feedback(rows, 0.25, seed=1)
    assert held_out and len(train) + len(held_out) == len(rows)
    first = {json.dumps(r) for r in rows[:1] + rows[-1:]}
    # A near-copy pair of one prompt lands on one side together.
    assert first <= {json.dumps(r) for r in train} or first <= {json.dumps(r) for r in held_out}


def test_retrain_continues_the_served_adapter_on_feedback_plus_replay_and_gates(tmp_path, served_run):
    export_dir = tmp_path / "export"
    export_feedback(feedback_items(), [], export_dir, test_rows=read_jsonl(served_run.split("test")))
    served_weights = {k: v.clone() for k, v in _adapter_tensors(served_run.adapter).items()}

    decision = retrain(served_run.root, export_dir, tmp_path / "retrained", holdout=0.25, replay_ratio=1.0,
                       overrides=["train.epochs=2", "tracking.backend=none"], console_print=lambda *_: None)

    new = tmp_path / "retrained"
    config = read_json(new / "manifest.json")["config"]
    assert config["model"]["adapter"] == str(served_run.adapter.resolve())
    assert config["data"]["test_file"] == str(served_run.split("test").resolve())  # the frozen held-out set
    trained = read_jsonl(new / "feedback" / "train.jsonl")
    held_out = read_jsonl(new / "feedback" / "holdout.jsonl")
    questions = lambda rows: {r["messages"][-2]["content"] for r in rows}  # noqa: E731
    assert held_out and not questions(trained) & questions(held_out)
    replayed = questions(trained) & {q for q, _, _ in FACTS}
    assert len(replayed) >= 1 and decision["data"]["replay"] == decision["data"]["train_feedback"]

    # The served adapter is untouched; the new one started from it and moved.
    assert all(torch.equal(served_weights[k], v) for k, v in _adapter_tensors(served_run.adapter).items())
    new_weights = _adapter_tensors(new / "adapter")
    assert set(new_weights) == set(served_weights)
    assert any(not torch.equal(served_weights[k], new_weights[k]) for k in new_weights)

    saved = read_json(new / "promotion.json")
    assert saved["decision"] in ("promote", "reject") and saved["reasons"]
    assert set(saved["checks"]) == {"frozen test set", "feedback slice"}
    assert saved["checks"]["frozen test set"]["n"] == 4 and saved["checks"]["feedback slice"]["n"] == len(held_out)
    assert (new / "metrics.json").is_file() and (new / "report.html").is_file()


def test_a_missing_adapter_is_named(tmp_path, tiny_config):
    tiny_config["model"]["adapter"] = str(tmp_path / "nowhere")
    with pytest.raises(TuneloopError, match="model.adapter"):
        run_all(validate_config(tiny_config), console_print=lambda *_: None)
    tiny_config["train"]["method"] = "full"
    with pytest.raises(Exception, match="train.method must be an adapter method"):
        validate_config(tiny_config)


def _adapter_tensors(adapter_dir):
    from safetensors.torch import load_file

    return load_file(str(adapter_dir / "adapter_model.safetensors"))


def test_the_loop_waits_for_enough_feedback_then_runs_a_gated_cycle(tmp_path, served_run):
    from tuneloop.feedback.loop import LoopSettings, run_loop
    from tuneloop.serve.store import Store, utcnow

    url = f"sqlite:///{tmp_path / 'serve.db'}"
    store = Store(url)

    def arrive(count: int) -> None:
        for item in feedback_items()[:count]:
            request_id = f"{item.request_id}-{utcnow().timestamp()}"
            store.record_request(id=request_id, created_at=utcnow(), finished_at=utcnow(), endpoint="chat",
                                 model="served", variant="served", messages=list(item.messages), reply=item.reply,
                                 status=200)
            store.record_feedback("rating", request_id, rating="down", correction=item.correction,
                                  user_hash=item.user)

    arrive(2)
    naps = []

    def sleep(seconds):  # the loop checks, finds too little, sleeps: more feedback arrives meanwhile
        naps.append(seconds)
        arrive(len(NEW_FACTS))

    settings = LoopSettings(run=str(served_run.root), store=str(tmp_path / "serve.db"), min_feedback=6, every=5,
                            cycles=1, holdout=0.25, set=["train.epochs=1", "tracking.backend=none"],
                            out=str(tmp_path / "loop"))
    state = run_loop(settings, console_print=lambda *_: None, sleep=sleep)
    store.close()
    assert naps == [5]
    assert len(state["cycles"]) == 1 and state["cycles"][0]["decision"] in ("promote", "reject")
    assert (tmp_path / "loop" / "cycle-1" / "promotion.json").is_file()
    saved = read_json(tmp_path / "loop" / "loop.json")
    assert saved["cycles"][0]["candidate"].endswith("cycle-1") and saved["since"]
    assert "cycle-1/report.html" in (tmp_path / "loop" / "loop.html").read_text()


def test_feedback_on_the_served_validation_prompts_is_dropped(tmp_path):
    from tuneloop.feedback.retrain import drop_validation_copies
    from tuneloop.workspace import RunDir, write_jsonl

    served = RunDir(tmp_path / "served")
    write_jsonl(served.split("validation"), [chat_row(q, a) for q, a in NEW_FACTS[:2]])
    # One exact copy, one differing only in case and spacing (equal after normalization), one new prompt.
    rows = [chat_row(NEW_FACTS[0][0], "wrong"), chat_row("  which COLOUR is the staff van? ", "wrong"),
            chat_row(NEW_FACTS[5][0], NEW_FACTS[5][1])]
    kept, dropped = drop_validation_copies(rows, served)
    assert dropped == 2 and kept == rows[2:]
    assert drop_validation_copies(rows, RunDir(tmp_path / "no-splits")) == (rows, 0)
