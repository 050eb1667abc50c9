"""The packed DPO path computes what the padded one does: each reply's log-prob, its gradient, the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tuneloop.config.load import validate_config
from tuneloop.stages import data_stage, open_for_run, train_stage
from tuneloop.train.packed_attention import register_packed_attention
from tuneloop.train.packed_preference import (
    KL_SIDE,
    KTO_SIDES,
    PackedPairCollator,
    install_reply_log_probs,
    linear_log_probs,
    pack_pairs,
    preference_losses,
    sequence_log_probs,
)
from tuneloop.workspace import read_jsonl


def _pairs():
    generator = torch.Generator().manual_seed(1)

    def ids(length):
        return torch.randint(3, 300, (length,), generator=generator).tolist()

    return [{"prompt_ids": ids(p), "chosen_ids": ids(c), "rejected_ids": ids(r)}
            for p, c, r in ((5, 4, 9), (11, 2, 3), (3, 14, 6))]


def _model(path):
    from transformers import AutoModelForCausalLM

    attention = register_packed_attention()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attention)
    install_reply_log_probs(model, torch.float32)
    return model.eval()


def _alone(model, prompt, reply):
    """The reply's summed log-prob with the sequence run by itself, full logits."""
    ids = torch.tensor([prompt + reply])
    logits = model(input_ids=ids).logits[0, :-1].float()
    picked = F.log_softmax(logits, -1).gather(1, ids[0, 1:, None]).squeeze(1)
    return picked[len(prompt) - 1:].sum()


def test_a_packed_batch_gives_each_reply_the_log_prob_it_has_alone(tiny_model_dir):
    model, pairs = _model(tiny_model_dir), _pairs()
    batch = pack_pairs(pairs, max_length=None)
    # Each prompt is in the row once, shared by its two replies; the token count holds it twice, as padding would.
    assert batch["input_ids"].shape[1] == sum(len(p["prompt_ids"] + p["chosen_ids"] + p["rejected_ids"]) for p in pairs)
    sides = ("chosen_ids", "rejected_ids")
    assert batch["sequence_tokens"].tolist() == [len(p["prompt_ids"] + p[side]) for side in sides for p in pairs]
    with torch.no_grad():
        sums, counts, _ = sequence_log_probs(model, batch)
        expected = [_alone(model, p["prompt_ids"], p[side]) for side in ("chosen_ids", "rejected_ids") for p in pairs]
    assert counts.tolist() == [len(p[side]) for side in ("chosen_ids", "rejected_ids") for p in pairs]
    torch.testing.assert_close(sums, torch.stack(expected), rtol=1e-5, atol=1e-4)


def test_max_length_cuts_each_sequence_from_the_end(tiny_model_dir):
    model, pairs = _model(tiny_model_dir), _pairs()
    with torch.no_grad():
        sums, counts, _ = sequence_log_probs(model, pack_pairs(pairs, max_length=12))
        # Pair 1's prompt (11 tokens) leaves one chosen token; pair 2's prompt and chosen reply are cut to 12.
        assert counts.tolist()[:3] == [4, 1, 9]
        torch.testing.assert_close(sums[1], _alone(model, pairs[1]["prompt_ids"], pairs[1]["chosen_ids"][:1]))


def test_the_dpo_loss_and_its_gradient_match_the_padded_computation(tiny_model_dir):
    model, pairs = _model(tiny_model_dir), _pairs()
    reference = torch.tensor([-40.0, -9.0, -70.0]), torch.tensor([-50.0, -8.0, -30.0])

    def loss_of(chosen, rejected):
        return preference_losses(["sigmoid"], [1.0], 0.1, 0.0, chosen, rejected, *reference,
                                 torch.ones(3), torch.ones(3))

    sums, _, _ = sequence_log_probs(model, pack_pairs(pairs, max_length=None))
    loss_of(*sums.chunk(2)).backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    alone = torch.stack([_alone(model, p["prompt_ids"], p[side]) for side in ("chosen_ids", "rejected_ids")
                         for p in pairs])
    loss_of(*alone.chunk(2)).backward()
    for name, parameter in model.named_parameters():  # the tied LM head and embeddings included
        torch.testing.assert_close(packed_grads[name], parameter.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_linear_log_probs_gradient_matches_autograd_through_full_logits():
    generator = torch.Generator().manual_seed(2)
    hidden = torch.randn(7, 16, generator=generator, requires_grad=True)
    weight = torch.randn(50, 16, generator=generator, requires_grad=True)
    targets = torch.randint(0, 50, (7,), generator=generator)
    upstream = torch.randn(7, generator=generator)
    (linear_log_probs(hidden, weight, targets) * upstream).sum().backward()
    ours = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    full = F.log_softmax(hidden @ weight.T, -1).gather(1, targets[:, None]).squeeze(1)
    (full * upstream).sum().backward()
    torch.testing.assert_close(ours[0], hidden.grad)
    torch.testing.assert_close(ours[1], weight.grad)


def _train_packed(raw: dict):
    """Train a packed preference run: (run, summary, training-log records); its loss fell, its reference ran once."""
    lines = []
    config = validate_config(raw)
    run = open_for_run(config)
    data_stage(config, run, console_print=lambda *_: None)
    summary = train_stage(config, run, console_print=lines.append)
    assert any("computed once" in line for line in lines)
    log = [r for r in read_jsonl(run.train_log) if "loss" in r and "eval_loss" not in r]
    assert log[-1]["loss"] < log[0]["loss"]
    return run, summary, log


@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_packed_dpo_trains_from_cached_reference_log_probs(tmp_path, tiny_model_dir, pair_files, loss):
    from conftest import preference_run_config

    raw = preference_run_config(tmp_path / "run", tiny_model_dir, pair_files, "dpo", max_steps=6,
                                preference={"beta": 0.5, "loss": loss})
    run, summary, log = _train_packed(raw)
    # The first step's policy is the reference: every implicit reward starts at zero.
    assert log[0]["rewards/chosen"] == pytest.approx(0.0, abs=1e-4)
    assert summary["tokens_seen"] > 0 and (run.adapter / "adapter_config.json").is_file()


def test_a_loss_off_the_packed_path_says_so_and_trains_padded(tmp_path, tiny_model_dir, pair_files):
    from conftest import preference_run_config

    lines = []
    raw = preference_run_config(tmp_path / "run", tiny_model_dir, pair_files, "dpo", max_steps=2,
                                preference={"loss": "discopop"})
    config = validate_config(raw)
    run = open_for_run(config)
    data_stage(config, run, console_print=lambda *_: None)
    train_stage(config, run, console_print=lines.append)
    assert any("discopop needs TRL's padded batches" in line for line in lines)


def test_kto_rows_score_the_completion_and_the_kl_completion_behind_one_prompt(tiny_model_dir):
    model = _model(tiny_model_dir)
    rows = [{"prompt_ids": p["prompt_ids"], "completion_ids": p["chosen_ids"], "KL_completion_ids": p["rejected_ids"],
             "label": index % 2 == 0} for index, p in enumerate(_pairs())]
    rows.append({"prompt_ids": [], "completion_ids": [5, 6, 7], "KL_completion_ids": [8, 9, 10, 11], "label": True})
    batch = PackedPairCollator(None, KTO_SIDES, KL_SIDE)(rows)
    # The row holds each prompt and completion once; the KL completions follow in their own row, each behind its
    # prompt's last token (the rest of the prompt is read from the cache).
    assert batch["input_ids"].shape[1] == sum(len(r["prompt_ids"] + r["completion_ids"]) for r in rows)
    assert batch["continuation_input_ids"].shape[1] == sum(len(r["KL_completion_ids"]) for r in rows) - 1
    with torch.no_grad():
        sums, counts, _ = sequence_log_probs(model, batch)
    sides = ("completion_ids", KL_SIDE)
    expected = [_alone(model, r["prompt_ids"], r[side]) if r["prompt_ids"] else _alone(model, r[side][:1], r[side][1:])
                for side in sides for r in rows]
    torch.testing.assert_close(sums, torch.stack(expected), rtol=1e-5, atol=1e-4)
    assert counts.tolist() == [len(r[side]) - (not r["prompt_ids"]) for side in sides for r in rows]
    assert batch["sequence_tokens"].tolist() == [len(r["prompt_ids"] + r[side]) for side in sides for r in rows]
    assert batch["label"].tolist() == [True, False, True, True]


def test_kto_kl_completions_cut_to_max_length_and_take_no_gradient(tiny_model_dir):
    model = _model(tiny_model_dir).train()
    rows = [{"prompt_ids": p["prompt_ids"], "completion_ids": p["chosen_ids"], "KL_completion_ids": p["rejected_ids"],
             "label": True} for p in _pairs()]
    batch = PackedPairCollator(12, KTO_SIDES, KL_SIDE)(rows)
    sums, _, _ = sequence_log_probs(model, batch)
    with torch.no_grad():
        expected = [_alone(model, r["prompt_ids"][:12], r[side][:12 - len(r["prompt_ids"][:12])])
                    for side in ("completion_ids", KL_SIDE) for r in rows]
    torch.testing.assert_close(sums.detach(), torch.stack(expected), rtol=1e-5, atol=1e-4)
    # Only the completions are in the graph: the KL sums give no gradient to any weight, the completions do.
    weights = [w for w in model.parameters() if w.requires_grad]
    kl_grads = torch.autograd.grad(sums[len(rows):].sum(), weights, retain_graph=True, allow_unused=True)
    assert all(g is None or not g.any() for g in kl_grads)
    completion_grads = torch.autograd.grad(sums[:len(rows)].sum(), weights, allow_unused=True)
    assert sum(g is not None and bool(g.any()) for g in completion_grads) > len(weights) // 2


def _kto_trainers(tmp_path, model_dir, pair_files):
    """TRL's padded KTOTrainer and tuneloop's packed one, each on its own copy of one LoRA model."""
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    from tuneloop.recipes.kto import packed_kto_trainer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    rows = [{"prompt": [{"role": "user", "content": p["prompt"]}],
             "completion": [{"role": "assistant", "content": p[side]}], "label": side == "chosen"}
            for p in read_jsonl(pair_files["train"])[:6] for side in ("chosen", "rejected")]
    args = dict(per_device_train_batch_size=4, max_length=None, beta=0.5, precompute_ref_log_probs=True, use_cpu=True,
                report_to="none", bf16=False, desirable_weight=1.0, undesirable_weight=1.5)
    trainers = []
    for name, trainer_class, extra in (("padded", KTOTrainer, {}),
                                       ("packed", packed_kto_trainer(), {"data_collator": PackedPairCollator(
                                           None, KTO_SIDES, KL_SIDE)})):
        torch.manual_seed(0)
        model = get_peft_model(_model(model_dir).train(), LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
        trainers.append(trainer_class(model=model, args=KTOConfig(output_dir=str(tmp_path / name), **args),
                                      train_dataset=Dataset.from_list(rows), processing_class=tokenizer, **extra))
        # After the reference is cached, move the policy away from it, the same way in both copies.
        generator = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for parameter in (p for n, p in model.named_parameters() if "lora_B" in n):
                parameter.add_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return trainers


def test_packed_kto_loss_and_gradients_equal_trl_padded_kto(tmp_path, tiny_model_dir, pair_files):
    losses, grads, kls = [], [], []
    for trainer in _kto_trainers(tmp_path, tiny_model_dir, pair_files):
        batch = next(iter(trainer.get_train_dataloader()))
        loss = trainer.compute_loss(trainer.model, trainer._prepare_inputs(batch))
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in trainer.model.named_parameters() if p.grad is not None})
        # The policy moved away from the reference: the rewards are not the first step's zeros.
        assert abs(trainer._metrics["train"]["rewards/chosen"][-1]) > 1e-3
        kls.append(trainer._metrics["train"]["kl"][-1])
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-4, atol=1e-6)
    assert kls[1] == pytest.approx(kls[0], abs=1e-5)
    assert grads[0].keys() == grads[1].keys() and grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-3, atol=1e-6, msg=name)


def test_packed_kto_trains_from_cached_reference_log_probs(tmp_path, tiny_model_dir, pair_files):
    from conftest import preference_pairs, preference_run_config, write_jsonl

    rows = [{"prompt": p["prompt"], "completion": p[side], "label": side == "chosen"}
            for p in preference_pairs() for side in ("chosen", "rejected")]
    files = {"train": write_jsonl(tmp_path / "feedback.jsonl", rows), "test": pair_files["test"]}
    run, summary, log = _train_packed(preference_run_config(tmp_path / "run", tiny_model_dir, files, "kto",
                                                            max_steps=6, preference={"beta": 0.5}))
    # The first step's policy is the reference: the KL estimate and every implicit reward start at zero.
    rewards = [log[0][key] for key in ("rewards/chosen", "rewards/rejected") if key in log[0]]
    assert rewards and rewards == pytest.approx([0.0] * len(rewards), abs=1e-4)
    assert log[0]["kl"] == pytest.approx(0.0, abs=1e-4)
    assert summary["tokens_seen"] > 0 and (run.adapter / "adapter_config.json").is_file()

