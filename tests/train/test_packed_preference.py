"""The packed DPO path computes what the padded one does: each reply's log-prob, its gradient, the loss."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tuneloop.config.load import validate_config
from tuneloop.stages import data_stage, open_for_run, train_stage
from tuneloop.train.packed_attention import register_packed_attention
from tuneloop.train.packed_preference import (
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
    assert int(batch["sequence_tokens"]) == sum(2 * len(p["prompt_ids"]) + len(p["chosen_ids"] + p["rejected_ids"])
                                                for p in pairs)
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


@pytest.mark.parametrize("loss", ["sigmoid", "ipo"])
def test_packed_dpo_trains_from_cached_reference_log_probs(tmp_path, tiny_model_dir, pair_files, loss):
    from conftest import preference_run_config

    lines = []
    raw = preference_run_config(tmp_path / "run", tiny_model_dir, pair_files, "dpo", max_steps=6,
                                preference={"beta": 0.5, "loss": loss})
    config = validate_config(raw)
    run = open_for_run(config)
    data_stage(config, run, console_print=lambda *_: None)
    summary = train_stage(config, run, console_print=lines.append)
    assert any("computed once" in line for line in lines)
    log = [r for r in read_jsonl(run.train_log) if "loss" in r and "eval_loss" not in r]
    assert log[-1]["loss"] < log[0]["loss"]
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
