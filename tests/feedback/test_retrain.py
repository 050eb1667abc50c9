"""Retraining a served run on exported feedback, on the tiny random model: data, config, weights and the gate."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FACTS, chat_row

from tuneloop.config.load import validate_config
from tuneloop.errors import TuneloopError
from tuneloop.feedback.export import Feedback, export_feedback
from tuneloop.feedback.retrain import PARAPHRASE_FILE, choose_recipe, prepare_data, retrain, split_feedback
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


class RewordingGenerator:
    """A TextGenerator that "paraphrases" by prefixing (or as `replies` says): enough to follow the rows."""

    def __init__(self, replies: dict[str, str] | None = None) -> None:
        self.replies = replies or {}

    def generate(self, prompts: list[str]) -> list[str]:
        from tuneloop.data.augment import PARAPHRASE_PROMPT

        texts = [prompt.removeprefix(PARAPHRASE_PROMPT.format(text="")) for prompt in prompts]
        return [self.replies.get(text, "Tell me, " + text) for text in texts]


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

    said = []
    decision = retrain(served_run.root, export_dir, tmp_path / "retrained", holdout=0.25, replay_ratio=1.0,
                       overrides=["train.epochs=2", "tracking.backend=none"], console_print=said.append,
                       paraphrases=2, generator=RewordingGenerator())

    new = tmp_path / "retrained"
    config = read_json(new / "manifest.json")["config"]
    assert config["model"]["adapter"] == str(served_run.adapter.resolve())
    assert config["data"]["test_file"] == str(served_run.split("test").resolve())  # the frozen held-out set
    trained = read_jsonl(new / "feedback" / "train.jsonl")
    held_out = read_jsonl(new / "feedback" / "holdout.jsonl")
    questions = lambda rows: {r["messages"][-2]["content"] for r in rows}  # noqa: E731
    assert held_out and not questions(trained) & questions(held_out)
    replayed = questions(trained) & {q for q, _, _ in FACTS}
    served_train = len(read_jsonl(served_run.split("train")))
    assert len(replayed) >= 1 and decision["data"]["replay"] == min(served_train, decision["data"]["train_feedback"] +
                                                                     decision["data"]["paraphrased"])
    # Two paraphrases per training correction, none of the held-out slice.
    assert decision["data"]["paraphrased"] == 2 * decision["data"]["train_feedback"]
    assert sum("augmented" in row for row in trained) == decision["data"]["paraphrased"]
    assert not any("augmented" in row for row in held_out)
    assert read_json(new / "feedback" / PARAPHRASE_FILE)["kept"] == decision["data"]["paraphrased"]
    assert any(line.startswith("retrain: paraphrased ") for line in said)

    # The served adapter is untouched; the new one started from it and moved.
    assert all(torch.equal(served_weights[k], v) for k, v in _adapter_tensors(served_run.adapter).items())
    new_weights = _adapter_tensors(new / "adapter")
    assert set(new_weights) == set(served_weights)
    assert any(not torch.equal(served_weights[k], new_weights[k]) for k in new_weights)

    saved = read_json(new / "promotion.json")
    # Two held-out rows are far too few to show a gain on: the gate says so and keeps the served run.
    assert saved["decision"] == "reject"
    assert any(reason.startswith(f"feedback slice of {len(held_out)} rows is too small to judge")
               for reason in saved["reasons"])
    assert saved["checks"]["feedback slice"]["verdict"] == "too small"
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
    # The default: the served base model (the tiny random one here) paraphrased each training correction 4 times.
    paraphrased = read_json(tmp_path / "loop" / "cycle-1" / "feedback" / PARAPHRASE_FILE)
    assert "skipped" not in paraphrased and paraphrased["per_row"] == 4
    assert paraphrased["asked"] == 4 * paraphrased["rows"] == paraphrased["kept"] + sum(paraphrased["dropped"].values())
    saved = read_json(tmp_path / "loop" / "loop.json")
    assert saved["cycles"][0]["candidate"].endswith("cycle-1") and saved["since"]
    assert "cycle-1/report.html" in (tmp_path / "loop" / "loop.html").read_text()


def test_the_loop_warns_when_its_threshold_leaves_the_gate_too_few_rows_to_judge(tmp_path):
    from tuneloop.feedback.gate import MIN_FEEDBACK_ROWS
    from tuneloop.feedback.loop import LoopSettings, run_loop, slice_warning

    defaults = LoopSettings(run="runs/quickstart", store="runs/serve.db")
    assert slice_warning(defaults) is None  # the defaults hold out exactly the fewest rows the gate judges
    assert defaults.min_feedback * defaults.holdout == MIN_FEEDBACK_ROWS
    warning = slice_warning(LoopSettings(run="r", store="s", min_feedback=50, holdout=0.2))
    assert "holds out at most 10 feedback prompt(s)" in warning and "set min_feedback to at least 100" in warning
    assert "set holdout above 0" in slice_warning(LoopSettings(run="r", store="s", holdout=0))
    from tuneloop.serve.store import Store

    Store(f"sqlite:///{tmp_path / 'serve.db'}").close()  # an empty store: the loop warns, then waits
    said = []
    settings = LoopSettings(run="r", store=str(tmp_path / "serve.db"), min_feedback=40, holdout=0.35,
                            out=str(tmp_path / "loop"))
    run_loop(settings, console_print=said.append, once=True)
    assert "set min_feedback to at least 58" in said[0] and "waiting for 40" in said[-1]


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


def test_only_training_corrections_are_paraphrased_and_none_copies_a_held_out_prompt(tmp_path):
    from tuneloop.workspace import RunDir, write_jsonl

    served = RunDir(tmp_path / "served")
    write_jsonl(served.split("train"), [chat_row(q, a) for q, a, _ in FACTS])
    write_jsonl(served.split("test"), [chat_row("Tell me, " + NEW_FACTS[0][0], NEW_FACTS[0][1])])
    export = tmp_path / "export"
    write_jsonl(export / "sft.jsonl", [chat_row(q, a) for q, a in NEW_FACTS])

    # Seed 7 holds out the courier and snack questions; the wifi question's "paraphrase" copies the snack one.
    wifi, snack = NEW_FACTS[4][0], NEW_FACTS[7][0]
    data = prepare_data(served, export, tmp_path / "out", "sft", 0.5, 0.25, 7, paraphrases=1,
                        generator=RewordingGenerator({wifi: snack}), console_print=lambda *_: None)

    trained = read_jsonl(data["paths"]["train"])
    held_out = read_jsonl(data["paths"]["holdout"])
    question = lambda row: row["messages"][-2]["content"]  # noqa: E731
    originals = {question(row): row for row in trained if question(row) in dict(NEW_FACTS)}
    copies = [row for row in trained if "augmented" in row]
    assert {question(row) for row in held_out} == {NEW_FACTS[6][0], snack}
    assert not any("augmented" in row for row in held_out)
    assert not {question(row) for row in copies} & {question(row) for row in held_out}
    for copy in copies:
        source = trained[copy["augmented"]["source_row"] - 1]  # points at its original in the written file
        assert question(copy) == "Tell me, " + question(source) and source is not copy
        assert copy["messages"][-1] == source["messages"][-1]  # the correction, unchanged
    # Not paraphrased: the van question (its rewording is a frozen test question) and the wifi one (held out).
    assert len(originals) == 6 and {question(row) for row in copies} == {"Tell me, " + q for q in originals} - {
        "Tell me, " + NEW_FACTS[0][0], "Tell me, " + wifi}
    assert data["paraphrase"]["dropped"] == {"copies a held-out or test question": 2}
    assert read_json(tmp_path / "out" / "feedback" / PARAPHRASE_FILE) == data["paraphrase"]
    assert data["replay"] == min(len(FACTS), round(0.5 * (len(originals) + len(copies))))

    off = prepare_data(served, export, tmp_path / "off", "sft", 0.5, 0.25, 7, paraphrases=0,
                       console_print=lambda *_: None)
    assert off["paraphrased"] == 0 and off["paraphrase"]["skipped"] == "paraphrases is 0"


def test_a_base_model_that_cannot_paraphrase_is_said_and_retraining_goes_on(tmp_path):
    from tuneloop.errors import ModelError
    from tuneloop.workspace import RunDir, write_jsonl

    class NoChatTemplate:
        def generate(self, prompts):
            raise ModelError("model base has no chat template, so it cannot follow paraphrase instructions.")

    served = RunDir(tmp_path / "served")
    write_jsonl(served.split("train"), [chat_row(q, a) for q, a, _ in FACTS])
    write_jsonl(tmp_path / "export" / "sft.jsonl", [chat_row(q, a) for q, a in NEW_FACTS])
    said = []
    data = prepare_data(served, tmp_path / "export", tmp_path / "out", "sft", 1.0, 0.25, 7, paraphrases=3,
                        generator=NoChatTemplate(), console_print=said.append)
    assert data["paraphrased"] == 0 and "no chat template" in data["paraphrase"]["skipped"]
    assert said == ["retrain: no paraphrases: " + data["paraphrase"]["skipped"]]
    assert len(read_jsonl(data["paths"]["train"])) == data["train_feedback"] + data["replay"]


def test_the_gate_scores_the_served_model_on_the_frozen_set_once_per_weights_and_rows(served_run):
    from tuneloop.feedback.retrain import GATE_SCORES_FILE, gate_checks
    from tuneloop.workspace import write_json

    slice_rows = [chat_row(question, statement) for question, statement in NEW_FACTS[:3]]
    said = []
    first = gate_checks(served_run, served_run, slice_rows, said.append)
    kept = read_json(served_run.root / GATE_SCORES_FILE)
    assert not any("earlier gate" in line for line in said) and len(kept["frozen"]) == len(first[0].served) > 0
    # Marked scores show the second gate takes the served side from the file instead of generating again ...
    write_json(served_run.root / GATE_SCORES_FILE, {**kept, "frozen": [55.0] * len(kept["frozen"])})
    said.clear()
    second = gate_checks(served_run, served_run, slice_rows, said.append)
    assert any("earlier gate" in line for line in said)
    assert list(second[0].served) == [55.0] * len(kept["frozen"]) and list(second[0].candidate) == kept["frozen"]
    assert list(second[-1].served) == list(first[-1].served)  # the feedback slice is always scored
    # ... and only while the key (rows, settings, weights) is the same: other weights are scored afresh.
    write_json(served_run.root / GATE_SCORES_FILE, {**kept, "key": "other weights", "frozen": [55.0]})
    third = gate_checks(served_run, served_run, slice_rows, said.append)
    assert list(third[0].served) == kept["frozen"]
