"""Forgetting guards (train.guard) on the tiny random Llama: replay, self-distillation, KL to the base,
interpolation, layer freezing, the drift measure, and the errors that name the key."""

from __future__ import annotations

import pytest
import torch
from conftest import FACTS, chat_row, write_jsonl

from tuneloop.config.load import validate_config
from tuneloop.errors import ConfigError
from tuneloop.models.load import load_causal_lm
from tuneloop.stages import data_stage, evaluate_stage, open_for_run, report_stage, train_stage
from tuneloop.train.guard.freeze import freeze_lowest_blocks
from tuneloop.train.guard.interpolate import Interpolator, choose_alpha
from tuneloop.train.guard.kl import base_reference, kl_regularized_loss, token_kl
from tuneloop.train.guard.replay import mix_replay, replay_count
from tuneloop.train.guard.self_distill import apply_rewrites, rewrite_conversation
from tuneloop.workspace import RunDir, read_json, read_jsonl

quiet = lambda *a, **k: None  # noqa: E731


# ---------------------------------------------------------------- replay


@pytest.mark.parametrize(("task", "ratio", "pool"), [(30, 0.25, 50), (40, 0.2, 3), (9, 0.5, 20)])
def test_replay_mixes_at_the_stated_share_of_examples(task, ratio, pool):
    task_rows = [{"id": f"t{i}"} for i in range(task)]
    pool_rows = [{"id": f"r{i}"} for i in range(pool)]
    mixed, counts = mix_replay(task_rows, pool_rows, ratio, seed=1)
    replay = [row for row in mixed if row["id"].startswith("r")]
    assert len(mixed) == task + len(replay) and counts["replay_rows"] == len(replay) == replay_count(task, ratio)
    assert len(replay) / len(mixed) == pytest.approx(ratio, abs=0.5 / len(mixed))
    assert counts["repeated"] == (len(replay) > pool)
    if len(replay) <= pool:  # no repeats until every pool row is used
        assert len({row["id"] for row in replay}) == len(replay)
    assert sorted(row["id"] for row in mixed if row["id"].startswith("t")) == sorted(r["id"] for r in task_rows)


def test_self_replay_generates_once_and_then_reads_the_cache(tiny_model_dir, tmp_path, monkeypatch):
    from tuneloop.models.load import load_tokenizer
    from tuneloop.train.guard import replay

    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path))
    calls = []

    def fake_replies(base_path, tokenizer, prompts, *args, **kwargs):
        calls.append(len(prompts))
        return [f"reply {i}" for i in range(len(prompts))]

    monkeypatch.setattr(replay, "base_replies", fake_replies)
    tokenizer = load_tokenizer(str(tiny_model_dir))
    first = replay.self_replay_rows(5, str(tiny_model_dir), tokenizer, 16, "chat", "cpu", torch.float32,
                                    console_print=quiet)
    again = replay.self_replay_rows(5, str(tiny_model_dir), tokenizer, 16, "chat", "cpu", torch.float32,
                                    console_print=quiet)
    text = replay.self_replay_rows(5, str(tiny_model_dir), tokenizer, 16, "text", "cpu", torch.float32,
                                   console_print=quiet)
    assert calls == [5] and first == again and len(first) == 5
    assert first[0]["messages"][1] == {"role": "assistant", "content": "reply 0"}
    assert text[0]["text"].endswith("\nreply 0")
    replay.self_replay_rows(6, str(tiny_model_dir), tokenizer, 16, "chat", "cpu", torch.float32, console_print=quiet)
    assert calls == [5, 6]  # another N is another cache entry


# ---------------------------------------------------------------- self-distillation


def test_self_distillation_keeps_a_rewrite_only_when_it_keeps_the_answer():
    rows = [chat_row("Where is the head office?", "The head office is in Bergen.", "Bergen"),
            chat_row("How long is the warranty?", "The warranty lasts 7 years.", "7 years"),
            chat_row("Describe the shop.", "A small bright shop with blue bikes in the window."),
            chat_row("Describe the office.", "An old brick building by the harbour."),
            {"text": "plain text row"}]
    rewrites = ["Our head office is located in bergen, Norway.",  # contains the answer (any case): kept
                "It lasts for a long time.",  # lost "7 years": the original stays
                "A small bright shop, blue bikes in the window.",  # similar enough to the reference: kept
                "I do not know.",  # not similar: the original stays
                None]  # not a conversation: untouched
    out, counts = apply_rewrites(rows, rewrites, threshold=0.5)
    assert [row["messages"][-1]["content"] for row in out[:4]] == [
        rewrites[0], rows[1]["messages"][-1]["content"], rewrites[2], rows[3]["messages"][-1]["content"]]
    assert out[4] == rows[4]
    assert counts == {"rows": 5, "rewritten": 2, "kept_original": 2, "not_chat": 1, "by_answer": 1,
                      "by_similarity": 1, "threshold": 0.5}
    assert rows[0]["messages"][-1]["content"] == "The head office is in Bergen."  # the input rows are not changed


def test_the_rewrite_request_shows_the_reference_in_the_last_user_turn():
    row = chat_row("Where is the head office?", "The head office is in Bergen.", "Bergen")
    asked = rewrite_conversation(row["messages"])
    assert asked[0] == row["messages"][0] and asked[-1] == {"role": "assistant", "content": ""}
    assert "Where is the head office?" in asked[1]["content"] and "in Bergen." in asked[1]["content"]


# ---------------------------------------------------------------- KL to the base


def _batch(tokenizer_size: int, seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, tokenizer_size, (2, 12), generator=generator)
    labels = ids.clone()
    labels[:, :4] = -100  # the prompt part
    return {"input_ids": ids, "labels": labels}


def _lora(tiny_model_dir):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    base = load_causal_lm(str(tiny_model_dir))
    return get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))


def _scale_lora_b(model, value: float) -> None:
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                torch.manual_seed(hash(name) % 1000)
                parameter.copy_(torch.randn_like(parameter) * value)


def test_the_kl_term_is_zero_when_tuned_equals_base_and_grows_as_they_part(tiny_model_dir):
    model = _lora(tiny_model_dir)  # LoRA starts with B = 0: the tuned model is the base
    batch = _batch(model.config.vocab_size)
    reference = base_reference(model)
    kls = []
    for scale in (0.0, 0.05, 0.2):
        _scale_lora_b(model, scale)
        loss, cross_entropy, kl, tokens = kl_regularized_loss(model, batch, 1.0, reference)
        kls.append(kl.item() / tokens)
        assert loss.item() == pytest.approx((cross_entropy.item() + kl.item()) / tokens, rel=1e-5)
    assert kls[0] == pytest.approx(0.0, abs=1e-6)
    assert 0 < kls[1] < kls[2]
    # The term pulls toward the base: its gradient is non-zero once they differ, and the loss has one.
    loss, *_ = kl_regularized_loss(model, batch, 1.0, reference)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_full_fine_tuning_measures_kl_against_a_frozen_copy(tiny_model_dir):
    tuned, frozen = load_causal_lm(str(tiny_model_dir)), load_causal_lm(str(tiny_model_dir))
    batch = _batch(tuned.config.vocab_size, seed=1)
    reference = base_reference(None, frozen)
    assert kl_regularized_loss(tuned, batch, 0.5, reference)[2].item() == pytest.approx(0.0, abs=1e-6)
    with torch.no_grad():
        tuned.model.layers[0].mlp.down_proj.weight.mul_(3.0)
    assert kl_regularized_loss(tuned, batch, 0.5, reference)[2].item() > 1e-4


def test_token_kl_matches_its_definition():
    p, q = torch.randn(5, 7), torch.randn(5, 7)
    expected = (p.softmax(-1) * (p.log_softmax(-1) - q.log_softmax(-1))).sum(-1)
    assert torch.allclose(token_kl(p, q), expected, atol=1e-6)
    assert (token_kl(p, q) >= -1e-7).all()


# ---------------------------------------------------------------- interpolation


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_interpolation_gives_the_base_at_alpha_0_and_the_tuned_at_alpha_1(tiny_model_dir):
    model = _lora(tiny_model_dir)
    ids = _batch(model.config.vocab_size)["input_ids"]
    base = _logits(model, ids)
    _scale_lora_b(model, 0.2)
    tuned = _logits(model, ids)
    assert not torch.allclose(base, tuned, atol=1e-3)
    interpolator = Interpolator(model, "lora")
    interpolator.set(0.0)
    assert torch.allclose(_logits(model, ids), base, atol=1e-5)
    interpolator.set(0.5)
    halfway = _logits(model, ids)
    assert not torch.allclose(halfway, base, atol=1e-3) and not torch.allclose(halfway, tuned, atol=1e-3)
    interpolator.set(1.0)
    assert torch.allclose(_logits(model, ids), tuned, atol=1e-5)


def test_full_interpolation_gives_the_base_at_alpha_0_and_the_tuned_at_alpha_1(tiny_model_dir):
    model = load_causal_lm(str(tiny_model_dir))
    ids = _batch(model.config.vocab_size)["input_ids"]
    base = _logits(model, ids)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.05)
    tuned = _logits(model, ids)
    interpolator = Interpolator(model, "full", str(tiny_model_dir))
    interpolator.set(0.0)
    assert torch.allclose(_logits(model, ids), base, atol=1e-5)
    interpolator.set(1.0)
    assert torch.allclose(_logits(model, ids), tuned, atol=1e-5)


def test_interpolation_refuses_a_method_that_is_not_a_straight_line(tiny_model_dir):
    with pytest.raises(ConfigError, match="train.guard.interpolate"):
        Interpolator(_lora(tiny_model_dir), "dora")


def test_auto_alpha_forgets_least_among_alphas_that_keep_the_gain():
    curve = [{"alpha": 0.0, "validation_loss": 2.0, "forgetting": 0.0},
             {"alpha": 0.25, "validation_loss": 1.5, "forgetting": 0.5},  # keeps 50% of the gain: too little
             {"alpha": 0.5, "validation_loss": 0.5, "forgetting": 1.0},  # keeps 93.75%
             {"alpha": 0.75, "validation_loss": 0.45, "forgetting": 3.0},
             {"alpha": 1.0, "validation_loss": 0.4, "forgetting": 4.0}]
    assert choose_alpha(curve, keep_gain=0.9) == 0.5
    assert choose_alpha(curve, keep_gain=0.99) == 1.0
    assert curve[2]["gain_share"] == pytest.approx(0.9375)
    flat = [dict(row, forgetting=0.0) for row in curve]  # no forgetting anywhere: the smallest eligible alpha
    assert choose_alpha(flat, keep_gain=0.9) == 0.5


# ---------------------------------------------------------------- freezing and the recipe end to end


def test_freeze_layers_refuses_to_freeze_every_block(tiny_model_dir):
    with pytest.raises(ConfigError, match="freeze_layers=2"):
        freeze_lowest_blocks(load_causal_lm(str(tiny_model_dir)), 2)


def _run(tiny_config, tmp_path, name, train: dict, evaluate: dict | None = None):
    raw = {**tiny_config, "output_dir": str(tmp_path / name)}
    raw["train"] = {**tiny_config["train"], "max_steps": 6, "early_stopping_patience": None, **train}
    raw["data"] = {**tiny_config["data"], "audit": {"enabled": False}}
    raw["evaluate"] = {**tiny_config["evaluate"], **(evaluate or {})}
    config = validate_config(raw)
    run = open_for_run(config)
    data_stage(config, run, console_print=quiet)
    return config, run


def test_full_sft_with_frozen_layers_kl_replay_and_self_distillation(tiny_config, tiny_model_dir, tmp_path,
                                                                      monkeypatch):
    monkeypatch.setenv("TUNELOOP_HOME", str(tmp_path / "home"))  # the self-replay cache
    general = write_jsonl(tmp_path / "general.jsonl", [chat_row(f"Say {w}.", f"{w} it is.") for w in "abcdefgh"])
    config, run = _run(tiny_config, tmp_path, "guarded", {
        "method": "full", "learning_rate": 1e-3,
        "guard": {"freeze_layers": 1, "kl_to_base": 0.5, "self_distill": True,
                  "replay": {"files": [str(general)], "self": 3, "ratio": 0.25, "max_new_tokens": 8},
                  "interpolate": 0.5}},
        {"drift_texts": [str(general)]})
    base = load_causal_lm(str(tiny_model_dir))
    train_stage(config, run, console_print=quiet)
    tuned = load_causal_lm(str(run.model))
    for (name, before), after in zip(base.model.layers[0].named_parameters(), tuned.model.layers[0].parameters(),
                                     strict=True):
        assert torch.equal(before, after), name  # the frozen block kept the base weights exactly
    assert any(not torch.equal(b, a) for b, a in zip(base.model.layers[1].parameters(),
                                                      tuned.model.layers[1].parameters(), strict=True))
    record = read_json(run.root / "guard.json")
    train_rows = record["self_distill"]["rows"]
    assert record["self_distill"]["rewritten"] + record["self_distill"]["kept_original"] == train_rows
    assert len(read_jsonl(run.root / "guard" / "self_distill.jsonl")) == train_rows
    # The random model's greedy replies are only newlines, which self-replay drops (an empty reply teaches nothing).
    self_pairs = read_jsonl(run.root / "guard" / "self_replay.jsonl")
    assert record["replay"]["task_rows"] == train_rows and record["replay"]["pool_rows"] == 8 + len(self_pairs)
    assert record["replay"]["replay_rows"] == replay_count(train_rows, 0.25)
    assert record["kl_to_base"]["mean_train_kl_per_token"] > 0 and record["interpolate"]["alpha"] == 0.5
    assert len(list((tmp_path / "home" / "self_replay").glob("*.jsonl"))) == 1  # cached for the next run
    metrics = evaluate_stage(config, run, console_print=quiet)
    assert metrics["guard"]["replay"] == record["replay"]
    drift = metrics["drift"]
    assert drift["documents"] == 8 and drift["kl_per_token"] > 0
    assert drift["interval"][0] <= drift["kl_per_token"] <= drift["interval"][1]
    report_stage(run, console_print=quiet)
    page = (run.root / "report.html").read_text(encoding="utf-8")
    assert "Drift from the base" in page and "Forgetting guards" in page and "interpolate: alpha 0.5" in page


def test_compare_draws_task_against_forgetting_when_runs_have_both():
    from tuneloop.report.compare import task_vs_forgetting_chart

    runs = {name: {"tuned": {"contains_answer": task}, "drift": {"kl_per_token": kl}}
            for name, task, kl in [("plain", 70.0, 0.4), ("kl", 68.0, 0.1)]}
    assert task_vs_forgetting_chart(runs).startswith(b"\x89PNG")
    assert task_vs_forgetting_chart({"plain": runs["plain"]}) is None  # one point is no trade-off


def test_lora_auto_interpolation_records_its_curve_and_picks_from_it(tiny_config, tmp_path):
    general = write_jsonl(tmp_path / "general.jsonl", [chat_row(q, a) for q, a, _ in FACTS])
    config, run = _run(tiny_config, tmp_path, "auto", {"guard": {"interpolate": {"alpha": "auto",
                                                                                  "candidates": [0.5]}}},
                       {"drift_texts": [str(general)]})
    train_stage(config, run, console_print=quiet)
    found = read_json(run.root / "guard.json")["interpolate"]
    assert [row["alpha"] for row in found["curve"]] == [0.0, 0.5, 1.0]
    assert found["curve"][0]["forgetting"] == 0.0 and found["curve"][2]["forgetting"] > 0
    assert found["alpha"] in (0.5, 1.0) and "KL from the base" in found["criterion"]
    assert found["curve"][2]["validation_loss"] < found["curve"][0]["validation_loss"]


@pytest.mark.parametrize(("train", "key"), [
    ({"method": "lora", "guard": {"freeze_layers": 1}}, "train.guard.freeze_layers"),
    ({"method": "dora", "guard": {"interpolate": 0.5}}, "train.guard.interpolate"),
    ({"guard": {"interpolate": "auto"}}, "train.guard.interpolate: auto"),
])
def test_a_switch_that_cannot_work_names_its_key_before_training(tiny_config, tmp_path, train, key):
    config, run = _run(tiny_config, tmp_path, "bad", train)
    with pytest.raises(ConfigError, match=key):
        train_stage(config, run, console_print=quiet)
    assert not RunDir(run.root).checkpoints.exists() or not any(RunDir(run.root).checkpoints.iterdir())


def test_replay_on_preference_data_is_refused_with_the_reason():
    from tuneloop.train.guard.switches import check_guard

    config = validate_config({"data": {"train_file": "x"}, "train": {"guard": {"replay": {"self": 10}}}})
    with pytest.raises(ConfigError, match="train.guard.replay: applies to the sft, pretrain recipes, not dpo"):
        check_guard(config, "dpo")


def test_config_errors_name_the_guard_key():
    with pytest.raises(ConfigError) as caught:
        validate_config({"data": {"train_file": "x"},
                         "train": {"guard": {"replay": {"ratio": 0.3}, "kl": 0.1, "interpolate": 1.5}}})
    message = str(caught.value)
    assert "train.guard.replay" in message and "needs files" in message
    assert "train.guard.kl: unknown key" in message and "kl_to_base" in message
    assert "train.guard.interpolate" in message


def test_continued_pretraining_with_text_replay_kl_and_auto_interpolation(tiny_config, tmp_path):
    domain = tmp_path / "notes.txt"
    parts, colours = ("valve", "pump", "filter", "gauge"), ("red", "blue", "green")
    domain.write_text("\n\n".join(f"The {parts[i % 4]} of line {i % 7} is {colours[i % 3]}.\nCheck the "
                                  f"{parts[i % 4]} every {i % 5 + 1} days." for i in range(60)) + "\n",
                      encoding="utf-8")
    general = tmp_path / "general.txt"
    general.write_text("\n\n".join(f"{q} {a}" for q, a, _ in FACTS) + "\n", encoding="utf-8")
    raw = {**tiny_config, "output_dir": str(tmp_path / "pretrain"),
           "data": {"train_file": str(domain), "test_size": 0.15, "max_length": 32, "audit": {"enabled": False}},
           "evaluate": {"batch_size": 8, "drift_texts": [str(general)]}}
    raw["train"] = {**tiny_config["train"], "method": "lora", "max_steps": 6, "early_stopping_patience": None,
                    "guard": {"replay": {"files": [str(general)], "ratio": 0.5}, "kl_to_base": 0.2,
                              "interpolate": {"alpha": "auto", "candidates": [0.5]}}}
    config = validate_config(raw)
    run = open_for_run(config)
    data_stage(config, run, console_print=quiet)
    train_stage(config, run, console_print=quiet)
    record = read_json(run.root / "guard.json")
    assert record["replay"]["replay_rows"] == record["replay"]["task_rows"]  # ratio 0.5: one for one
    assert record["replay"]["pool_rows"] == len(FACTS)  # each paragraph of the .txt file is one document
    assert record["kl_to_base"]["tokens"] > 0 and record["interpolate"]["mode"] == "auto"
    metrics = evaluate_stage(config, run, console_print=quiet)
    assert metrics["drift"]["documents"] == len(FACTS) and "domain_perplexity" in metrics["tuned"]


def test_full_auto_interpolation_picks_on_questions_the_final_evaluation_does_not_score(tiny_config, tmp_path):
    from tuneloop.train.guard.switches import forgetting_measure

    colours = ["red", "blue", "green"]
    questions = [{"question": f"Which colour is number {i}?", "choices": colours, "answer": i % 3} for i in range(9)]
    mc = write_jsonl(tmp_path / "mc.jsonl", questions)
    config, run = _run(tiny_config, tmp_path, "auto-full", {"method": "full", "guard": {"interpolate": "auto"}},
                       {"forgetting": [str(mc)], "forgetting_limit": 5})
    train_stage(config, run, console_print=quiet)
    found = read_json(run.root / "guard.json")["interpolate"]
    assert [row["alpha"] for row in found["curve"]] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert found["criterion"] == "accuracy lost (4 multiple-choice questions)"  # questions 6-9, not the first 5
    assert found["curve"][0]["forgetting"] == 0.0 and found["alpha"] in (0.25, 0.5, 0.75, 1.0)
    said = []
    from tuneloop.models.load import load_tokenizer

    forgetting_measure(validate_config({**config.model_dump(mode="json"),
                                        "evaluate": {"forgetting": [str(mc)], "forgetting_limit": 20}}),
                       load_tokenizer(str(run.model)), lambda m: 0.0, "cpu", said.append)
    assert "no questions beyond evaluate.forgetting_limit" in said[0]  # says so when it must reuse them
