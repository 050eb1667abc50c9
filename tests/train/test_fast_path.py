"""The fast SFT path computes the same thing as the plain one: packed attention, the chunked loss, loss curves."""

from __future__ import annotations

import pytest
import torch

from tuneloop.config.load import validate_config
from tuneloop.stages import data_stage, open_for_run, train_stage
from tuneloop.train import chunked_loss
from tuneloop.train.chunked_loss import install_chunked_loss, linear_cross_entropy_sum
from tuneloop.train.packed_attention import register_packed_attention
from tuneloop.workspace import read_jsonl


def _model(path, attention):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attention).eval()


def _sequences():
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(3, 300, (length,), generator=generator) for length in (7, 12, 3, 20)]


def _packed(sequences):
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    collate = DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    return collate([{"input_ids": s.tolist(), "labels": s.tolist()} for s in sequences])


def _per_sequence_nll(logits, ids):
    return torch.nn.functional.cross_entropy(logits[:-1].float(), ids[1:], reduction="sum")


@pytest.mark.parametrize("attention", ["tuneloop_packed", "sdpa"])
def test_a_packed_row_gives_each_sequence_the_loss_it_has_alone(tiny_model_dir, attention):
    register_packed_attention()
    model = _model(tiny_model_dir, attention)
    sequences = _sequences()
    batch = _packed(sequences)
    assert batch["input_ids"].shape == (1, sum(len(s) for s in sequences))  # no padding at all
    with torch.no_grad():
        # use_cache=False: with a KV cache transformers' sdpa stops detecting packed rows (training never has one)
        packed_logits = model(**{k: v for k, v in batch.items() if k != "labels"}, use_cache=False).logits[0]
        start = 0
        for ids in sequences:
            alone = model(input_ids=ids[None]).logits[0]
            piece = packed_logits[start:start + len(ids)]
            assert torch.allclose(piece, alone, atol=1e-5), "a token saw another sequence of the packed row"
            assert _per_sequence_nll(piece, ids).item() == pytest.approx(_per_sequence_nll(alone, ids).item(), rel=1e-5)
            start += len(ids)


def test_without_boundaries_the_packed_row_is_wrong(tiny_model_dir):
    # The control for the test above: one long causal row (no position restarts) lets tokens see earlier sequences.
    model = _model(tiny_model_dir, "sdpa")
    sequences = _sequences()
    with torch.no_grad():
        joined = model(input_ids=torch.cat(sequences)[None]).logits[0]
        second_alone = model(input_ids=sequences[1][None]).logits[0]
    assert not torch.allclose(joined[7:19], second_alone, atol=1e-3)


def test_chunked_cross_entropy_matches_full_logits_in_value_and_gradients(monkeypatch):
    monkeypatch.setattr(chunked_loss, "CHUNK_FLOATS", 50 * 3)  # 50-word vocabulary: 3 rows per chunk, many chunks
    monkeypatch.setattr(chunked_loss, "MIN_CHUNK_ROWS", 1)
    torch.manual_seed(0)
    hidden = torch.randn(11, 8, requires_grad=True)
    weight = torch.randn(50, 8, requires_grad=True)
    targets = torch.randint(0, 50, (11,))

    chunked = linear_cross_entropy_sum(hidden, weight, targets, torch.float32)
    chunked.backward(torch.tensor(0.5))
    grads = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None

    reference = torch.nn.functional.cross_entropy(hidden @ weight.T, targets, reduction="sum")
    (reference * 0.5).backward()
    assert chunked.item() == pytest.approx(reference.item(), rel=1e-5)
    assert torch.allclose(grads[0], hidden.grad, atol=1e-5)
    assert torch.allclose(grads[1], weight.grad, atol=1e-5)


def test_chunked_loss_forward_equals_the_model_loss_and_skips_packed_boundaries(tiny_model_dir):
    register_packed_attention()
    model = _model(tiny_model_dir, "tuneloop_packed")
    sequences = _sequences()
    with torch.no_grad():
        expected_sum = sum(_per_sequence_nll(model(input_ids=s[None]).logits[0], s) for s in sequences)
        expected_count = sum(len(s) - 1 for s in sequences)
        single = model(input_ids=sequences[0][None], labels=sequences[0][None]).loss
    install_chunked_loss(model, torch.float32)
    batch = _packed(sequences)
    batch["labels"][0, 0] = 5  # a label on a sequence's first token must still not be predicted across a boundary
    with torch.no_grad():
        packed = model(**batch, tuneloop_chunked_loss=True).loss
        alone = model(input_ids=sequences[0][None], labels=sequences[0][None], tuneloop_chunked_loss=True).loss
        plain = model(input_ids=sequences[0][None], labels=sequences[0][None]).loss  # other calls unchanged
    assert packed.item() == pytest.approx((expected_sum / expected_count).item(), rel=1e-5)
    assert alone.item() == pytest.approx(single.item(), rel=1e-5)
    assert plain.item() == pytest.approx(single.item(), rel=1e-5)


def _train_losses(tiny_config, tmp_path, name, **switches):
    raw = {**tiny_config, "output_dir": str(tmp_path / name)}
    raw["train"] = {**tiny_config["train"], "max_steps": 8, "early_stopping_patience": None, **switches}
    raw["data"] = {**tiny_config["data"], "audit": {"enabled": False}}
    config = validate_config(raw)
    run = open_for_run(config)
    data_stage(config, run, console_print=lambda *a: None)
    summary = train_stage(config, run, console_print=lambda *a: None)
    losses = [r["loss"] for r in read_jsonl(run.train_log) if "loss" in r]
    return losses, summary


@pytest.mark.parametrize("method", ["lora", "full"])
def test_fast_and_plain_paths_follow_the_same_loss_curve(tiny_config, tmp_path, method):
    fast, fast_summary = _train_losses(tiny_config, tmp_path, f"fast-{method}", method=method)
    plain, plain_summary = _train_losses(
        tiny_config, tmp_path, f"plain-{method}", method=method, packing=False, chunked_loss=False,
        low_precision_base=False, lean_activations=False, trim_memory_every=None,
    )
    assert len(fast) == len(plain) == 8
    assert fast == pytest.approx(plain, rel=2e-3)
    assert fast[-1] < fast[0]  # and it learns
    # Both count real (non-padding) tokens: the packed row has no padding, the plain batches mask theirs.
    assert fast_summary["tokens_seen"] == plain_summary["tokens_seen"] > 0
