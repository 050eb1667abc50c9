"""GRPO's fast path computes what TRL's padded one does: the replies sampled, each token's log-prob, its gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tuneloop.train.packed_attention import register_packed_attention
from tuneloop.train.packed_groups import group_token_log_probs, pack_groups, shared_prompt_generate
from tuneloop.train.packed_preference import install_reply_log_probs

PAD = 0


def _model(path):
    from transformers import AutoModelForCausalLM

    attention = register_packed_attention()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attention)
    install_reply_log_probs(model, torch.float32)
    return model.eval()


def _ids(generator, length):
    return torch.randint(3, 300, (length,), generator=generator).tolist()


def _padded_batch():
    """TRL's layout: 2 prompts x 3 replies, shuffled, prompts left-padded and replies right-padded."""
    generator = torch.Generator().manual_seed(3)
    prompts = [_ids(generator, 7), _ids(generator, 4)]
    rows = [(prompts[p], _ids(generator, n)) for p, n in ((0, 5), (1, 2), (0, 1), (1, 6), (0, 3), (1, 4))]
    prompt_width, reply_width = max(len(p) for p in prompts), max(len(r) for _, r in rows)
    ids = [[PAD] * (prompt_width - len(p)) + p + r + [PAD] * (reply_width - len(r)) for p, r in rows]
    mask = [[0] * (prompt_width - len(p)) + [1] * (len(p) + len(r)) + [0] * (reply_width - len(r)) for p, r in rows]
    return rows, torch.tensor(ids), torch.tensor(mask), reply_width


def _alone(model, prompt, reply, temperature):
    """Each reply token's log-prob and entropy with the sequence run by itself, full logits."""
    ids = torch.tensor([prompt + reply])
    logits = model(input_ids=ids).logits[0, len(prompt) - 1:-1].float() / temperature
    log_softmax = F.log_softmax(logits, -1)
    return log_softmax.gather(1, torch.tensor(reply)[:, None]).squeeze(1), -(log_softmax.exp() * log_softmax).sum(-1)


def test_each_prompt_is_packed_once_and_every_reply_token_gets_its_log_prob_alone(tiny_model_dir):
    model = _model(tiny_model_dir)
    rows, ids, mask, width = _padded_batch()
    batch, token_rows, token_columns = pack_groups(ids, mask, width)
    assert batch["input_ids"].shape[1] == 7 + 4 + sum(len(r) for _, r in rows)  # each prompt once
    assert batch["tuneloop_pair_spans"].shape == (2, 5)
    with torch.no_grad():
        log_probs, entropies = group_token_log_probs(model, ids, mask, width, temperature=0.7, with_entropy=True)
    assert log_probs.shape == entropies.shape == (6, width)
    for row, (prompt, reply) in enumerate(rows):
        expected, expected_entropy = _alone(model, prompt, reply, 0.7)
        torch.testing.assert_close(log_probs[row, :len(reply)], expected, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(entropies[row, :len(reply)], expected_entropy, atol=1e-4, rtol=1e-4)
        assert (log_probs[row, len(reply):] == 0).all()


def test_the_packed_log_probs_carry_the_same_gradient_as_the_padded_batch(tiny_model_dir):
    model = _model(tiny_model_dir)
    rows, ids, mask, width = _padded_batch()
    weights = torch.randn(6, width, generator=torch.Generator().manual_seed(5))
    completion_mask = mask[:, -width:].float()

    log_probs, _ = group_token_log_probs(model, ids, mask, width)
    (log_probs * weights * completion_mask).sum().backward()
    packed = {name: p.grad.clone() for name, p in model.named_parameters()}
    model.zero_grad()

    # The padded batch through the full logits, as TRL computes it (position ids from the left-padded mask).
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -width - 1:-1].float()
    padded = F.log_softmax(logits, -1).gather(2, ids[:, -width:, None]).squeeze(2)
    (padded * weights * completion_mask).sum().backward()
    for name, parameter in model.named_parameters():
        torch.testing.assert_close(packed[name], parameter.grad, atol=2e-5, rtol=1e-4, msg=name)


def test_a_batch_with_a_gap_inside_a_reply_is_left_to_the_padded_path(tiny_model_dir):
    _, ids, mask, width = _padded_batch()
    mask = mask.clone()
    mask[0, -width + 1] = 0  # a masked token before the reply's last real one
    assert pack_groups(ids, mask, width) is None


def test_sampling_from_one_prefill_per_prompt_gives_the_replies_sampling_each_row_gives(tiny_model_dir):
    from transformers import GenerationConfig

    model = _model(tiny_model_dir)
    generator = torch.Generator().manual_seed(9)
    prompts = [_ids(generator, 6), _ids(generator, 3)]
    rows = [prompts[0], prompts[1], prompts[0], prompts[1], prompts[0], prompts[1]]
    config = GenerationConfig(max_new_tokens=12, do_sample=False, pad_token_id=PAD, eos_token_id=None)
    shared = shared_prompt_generate(model, rows, PAD, generation_config=config)

    width = max(len(p) for p in rows)
    ids = torch.tensor([[PAD] * (width - len(p)) + p for p in rows])
    mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in rows])
    plain = model.generate(input_ids=ids, attention_mask=mask, generation_config=config)
    assert shared.shape == plain.shape == (6, width + 12)
    assert torch.equal(shared, plain)

    # Sampling: the same seed draws the same replies from the copied cache as from each row's own prefill.
    config = GenerationConfig(max_new_tokens=12, do_sample=True, temperature=1.3, top_k=0, pad_token_id=PAD,
                              eos_token_id=None)
    torch.manual_seed(4)
    shared = shared_prompt_generate(model, rows, PAD, generation_config=config)
    torch.manual_seed(4)
    assert torch.equal(shared, model.generate(input_ids=ids, attention_mask=mask, generation_config=config))
    assert not torch.equal(shared[0, width:], shared[2, width:])  # the group's replies differ
