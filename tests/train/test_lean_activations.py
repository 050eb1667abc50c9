"""Leaner saved activations change what backward keeps, never what it computes."""

from __future__ import annotations

import copy
import sys

import pytest
import torch

from tuneloop.train import memory_trim
from tuneloop.train.lean_activations import recompute_cheap_activations
from tuneloop.train.model_setup import keep_adapter_inputs_in_compute_dtype


def _tiny_llama(dtype=torch.float32):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=120, hidden_size=32, intermediate_size=80, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return LlamaForCausalLM(config).to(dtype)


def _ids():
    return torch.randint(0, 120, (2, 17), generator=torch.Generator().manual_seed(1))


def _loss_and_saved_bytes(model, ids):
    saved = {}

    def keep(tensor):
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), sum(saved.values())


def test_lean_model_gives_the_same_loss_and_gradients_and_keeps_less():
    original = _tiny_llama()
    lean = copy.deepcopy(original)
    changed = recompute_cheap_activations(lean)
    assert changed == {"norms": 2 * 2 + 1, "gated_mlps": 2}  # two per layer plus the final norm

    ids = _ids()
    loss, saved = _loss_and_saved_bytes(original, ids)
    lean_loss, lean_saved = _loss_and_saved_bytes(lean, ids)
    assert lean_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    for (name, parameter), lean_parameter in zip(original.named_parameters(), lean.parameters(), strict=True):
        torch.testing.assert_close(lean_parameter.grad, parameter.grad, rtol=1e-5, atol=1e-7, msg=name)
    assert lean_saved < saved * 0.95


def test_lean_model_is_unchanged_without_grad():
    original = _tiny_llama()
    lean = copy.deepcopy(original)
    recompute_cheap_activations(lean)
    with torch.no_grad():
        torch.testing.assert_close(lean(input_ids=_ids()).logits, original(input_ids=_ids()).logits)


def test_an_mlp_with_another_forward_keeps_it():
    class UpGatedMLP(torch.nn.Module):  # same attribute names, different formula
        def __init__(self):
            super().__init__()
            self.gate_proj, self.up_proj, self.down_proj = (torch.nn.Linear(4, 4) for _ in range(3))
            self.act_fn = torch.nn.SiLU()

        def forward(self, x):
            return self.down_proj(self.gate_proj(x) * self.act_fn(self.up_proj(x)))

    mlp = UpGatedMLP()
    x = torch.randn(3, 4)
    before = mlp(x)
    assert recompute_cheap_activations(mlp) == {"norms": 0, "gated_mlps": 0}
    torch.testing.assert_close(mlp(x), before)


def test_lora_adapters_share_their_input_under_autocast():
    from peft import LoraConfig, get_peft_model

    def lora_model():
        model = get_peft_model(_tiny_llama(torch.bfloat16), LoraConfig(r=4, target_modules="all-linear"))
        for name, parameter in model.named_parameters():  # a nonzero B, so the adapters change the loss
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.1)
        return model

    casting, sharing = lora_model(), lora_model()
    sharing.load_state_dict(casting.state_dict())
    keep_adapter_inputs_in_compute_dtype(sharing)
    ids = _ids()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, saved = _loss_and_saved_bytes(casting, ids)
        shared_loss, shared_saved = _loss_and_saved_bytes(sharing, ids)
    assert shared_loss.item() == pytest.approx(loss.item(), rel=1e-3)
    for (name, parameter), other in zip(casting.named_parameters(), sharing.parameters(), strict=True):
        if parameter.requires_grad:
            torch.testing.assert_close(other.grad, parameter.grad, rtol=2e-2, atol=1e-3, msg=name)
    assert shared_saved < saved


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's (Linux)")
def test_free_memory_is_released_on_linux():
    assert memory_trim.release_free_memory() is True


def test_memory_trim_callback_runs_every_n_steps(monkeypatch):
    from types import SimpleNamespace

    calls = []
    monkeypatch.setattr(memory_trim, "release_free_memory", lambda: calls.append(1) or True)
    callback = memory_trim.MemoryTrimCallback(every=3)
    for step in range(1, 10):
        callback.on_step_end(None, SimpleNamespace(global_step=step), None)
    assert len(calls) == 3
