"""Preference pairs on the fast path: chosen and rejected packed padding-free, log-probs of reply tokens only, chunked.

TRL's DPOTrainer pads each batch to its longest sequence (chosen and rejected stacked) and projects every
position through the LM head, prompt tokens included. Here:
- `pack_pairs` puts a batch's 2 x B sequences (chosen of every pair, then rejected, TRL's order) back to back
  in one row, with position ids restarting per sequence and `cu_seq_lens_q` marking the boundaries, so the
  packed attention (tuneloop.train.packed_attention) keeps attention inside each sequence and no padding
  token is computed.
- `install_reply_log_probs` adds a `tuneloop_reply_log_probs=True` mode to a causal LM's forward (so the call
  still goes through PEFT, DDP and accelerate wrappers): it returns the log-prob of each reply token and the
  sequence it belongs to; the LM head runs only on positions that predict a reply token, in chunks, and the
  full logits never exist (TRL's fused LM head does this on Triton devices only; on a CPU it scores every position).
- `sequence_log_probs` sums them per sequence; `preference_losses` turns them into the DPO-family losses.

The reference log-probs are not here: recipes/dpo.py computes them once before training with the same packed
forward (adapter switched off) and caches them in the dataset.
"""

from __future__ import annotations

import functools
import types

from tuneloop.train.chunked_loss import CHUNK_FLOATS, MIN_CHUNK_ROWS

# Losses computed from the summed log-probs of chosen and rejected replies alone (plus the reply lengths for
# ipo); the others in TRL's list need TRL's padded path.
PACKED_DPO_LOSSES = ("sigmoid", "hinge", "ipo", "robust", "bco_pair", "apo_zero", "nca_pair", "sppo_hard",
                     "sigmoid_norm", "sft")


def pack_pairs(examples: list[dict], max_length: int | None) -> dict:
    """One padding-free row from rows of prompt_ids, chosen_ids, rejected_ids (and cached ref log-probs if present).

    Each sequence is prompt + reply cut to max_length from the end (the prompt was already fitted to its share of
    max_length by tuneloop.recipes.preference_data). `reply_mask` marks reply tokens.
    """
    import torch

    ids, positions, reply, edges = [], [], [], [0]
    for side in ("chosen_ids", "rejected_ids"):
        for example in examples:
            prompt, completion = example["prompt_ids"], example[side]
            tokens = (prompt + completion)[:max_length]
            ids += tokens
            positions += range(len(tokens))
            reply += ([0] * len(prompt) + [1] * len(completion))[:len(tokens)]
            edges.append(len(ids))
    boundaries = torch.tensor(edges, dtype=torch.int32)
    longest = int(boundaries.diff().max())
    batch = {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([positions]),
        "reply_mask": torch.tensor([reply], dtype=torch.bool),
        "cu_seq_lens_q": boundaries, "cu_seq_lens_k": boundaries,
        "max_length_q": longest, "max_length_k": longest,
    }
    for key in ("ref_chosen_logps", "ref_rejected_logps"):
        if key in examples[0]:
            batch[key] = torch.tensor([example[key] for example in examples], dtype=torch.float32)
    return batch


class PackedPairCollator:
    """The data collator giving `pack_pairs` batches (the Trainer moves the tensors to the device)."""

    def __init__(self, max_length: int | None) -> None:
        self.max_length = max_length

    def __call__(self, examples: list[dict]) -> dict:
        return pack_pairs(examples, self.max_length)


def _log_prob_function():
    import torch

    class LinearLogProb(torch.autograd.Function):
        """log softmax(hidden @ weight.T)[target] per row, in chunks; backward recomputes each chunk's softmax.

        d logp_i / d z_i = onehot(y_i) - softmax(z_i), scaled by the incoming gradient of row i.
        """

        @staticmethod
        def forward(ctx, hidden, weight, targets, compute_dtype):
            log_probs, log_norms = _chunked_log_probs(hidden, weight, targets, compute_dtype)
            ctx.compute_dtype = compute_dtype
            ctx.save_for_backward(hidden, weight, targets, log_norms)
            return log_probs

        @staticmethod
        def backward(ctx, grad_output):
            hidden, weight, targets, log_norms = ctx.saved_tensors
            dtype = ctx.compute_dtype
            rows = _chunk_rows(weight)
            head = weight.detach().to(dtype)
            grad_hidden = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
            grad_weight = torch.zeros_like(weight, dtype=torch.float32) if ctx.needs_input_grad[1] else None
            with torch.autocast(hidden.device.type, enabled=False):
                for start in range(0, hidden.shape[0], rows):
                    h = hidden[start:start + rows].detach().to(dtype)
                    y = targets[start:start + rows]
                    grad_logits = (h @ head.T).float().sub_(log_norms[start:start + rows, None]).exp_().neg_()
                    grad_logits[torch.arange(len(y), device=y.device), y] += 1.0
                    grad_logits = grad_logits.mul_(grad_output[start:start + rows, None].float()).to(dtype)
                    if grad_hidden is not None:
                        grad_hidden[start:start + rows] = grad_logits @ head
                    if grad_weight is not None:
                        grad_weight += (grad_logits.T @ h).float()
            return grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype), None, None

    return LinearLogProb


def _chunk_rows(weight) -> int:
    return max(MIN_CHUNK_ROWS, CHUNK_FLOATS // weight.shape[0])


def _chunked_log_probs(hidden, weight, targets, compute_dtype):
    """(log-prob of each row's target, log-normalizer of each row), never more than one chunk of logits at once."""
    import torch

    rows = _chunk_rows(weight)
    head = weight.detach().to(compute_dtype)
    log_probs = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    log_norms = torch.empty_like(log_probs)
    with torch.no_grad(), torch.autocast(hidden.device.type, enabled=False):
        for start in range(0, hidden.shape[0], rows):
            logits = (hidden[start:start + rows].detach().to(compute_dtype) @ head.T).float()
            log_norms[start:start + rows] = torch.logsumexp(logits, dim=-1)
            picked = logits.gather(1, targets[start:start + rows, None]).squeeze(1)
            log_probs[start:start + rows] = picked - log_norms[start:start + rows]
    return log_probs, log_norms


@functools.cache
def _log_prob_class():
    return _log_prob_function()


def linear_log_probs(hidden, weight, targets, compute_dtype=None):
    """log softmax(hidden @ weight.T)[targets] for hidden [N, H], weight [V, H], targets [N]; differentiable."""
    import torch

    dtype = compute_dtype or hidden.dtype
    if not torch.is_grad_enabled() or not (hidden.requires_grad or weight.requires_grad):
        return _chunked_log_probs(hidden, weight, targets, dtype)[0]
    return _log_prob_class().apply(hidden, weight, targets, dtype)


def install_reply_log_probs(causal_lm, compute_dtype) -> None:
    """Give `causal_lm.forward` a `tuneloop_reply_log_probs=True` mode for `pack_pairs` batches.

    That mode returns a dict: `log_probs` [M] of every reply token (predicted from the token before it, inside its
    own sequence) and `sequence_index` [M], the sequence each belongs to. Other calls run the forward it had.
    Install it before TRL's trainer adds its fused LM head: that head passes unknown keywords on to this forward.
    """
    previous_forward = causal_lm.forward

    @functools.wraps(type(causal_lm).forward)
    def forward(self, *args, tuneloop_reply_log_probs=False, reply_mask=None, **kwargs):
        if not tuneloop_reply_log_probs:
            return previous_forward(*args, **kwargs)
        kwargs["use_cache"] = False
        kwargs.pop("labels", None)
        hidden = self.base_model(*args, **kwargs).last_hidden_state[0, :-1]
        position_ids = kwargs["position_ids"][0]
        input_ids = kwargs["input_ids"][0] if "input_ids" in kwargs else args[0][0]
        # Token t+1 is predicted at t; a sequence's first token (position 0) is predicted by nothing.
        keep = reply_mask[0, 1:] & (position_ids[1:] != 0)
        sequence_index = (position_ids == 0).cumsum(0)[1:][keep] - 1
        head = self.get_output_embeddings()
        log_probs = linear_log_probs(hidden[keep], head.weight, input_ids[1:][keep], compute_dtype)
        return {"log_probs": log_probs, "sequence_index": sequence_index}

    causal_lm.forward = types.MethodType(forward, causal_lm)


def sequence_log_probs(model, batch: dict) -> tuple:
    """(summed reply log-prob of each sequence [2B], reply tokens of each [2B], per-token output) for a packed batch."""
    import torch

    inputs = {key: batch[key] for key in ("input_ids", "position_ids", "cu_seq_lens_q", "cu_seq_lens_k",
                                          "max_length_q", "max_length_k", "reply_mask")}
    output = model(**inputs, tuneloop_reply_log_probs=True)
    sequences = batch["cu_seq_lens_q"].numel() - 1
    index = output["sequence_index"]
    sums = torch.zeros(sequences, dtype=torch.float32, device=index.device).index_add(0, index, output["log_probs"])
    counts = torch.bincount(index, minlength=sequences)
    return sums, counts, output


def preference_losses(loss_types, loss_weights, beta: float, label_smoothing: float, chosen, rejected,
                      ref_chosen, ref_rejected, chosen_tokens, rejected_tokens, chosen_token_log_probs=None):
    """The weighted sum of TRL's DPO losses (the PACKED_DPO_LOSSES), each the mean over pairs, from summed log-probs.

    chosen/rejected: summed reply log-probs [B] of the policy; ref_*: the reference's; *_tokens: reply lengths;
    chosen_token_log_probs: every chosen reply token's log-prob (the sft term's mean).
    """
    import torch
    import torch.nn.functional as F

    chosen_ratio, rejected_ratio = chosen - ref_chosen, rejected - ref_rejected
    delta = chosen_ratio - rejected_ratio
    total = torch.zeros((), dtype=torch.float32, device=chosen.device)
    for loss_type, weight in zip(loss_types, loss_weights, strict=True):
        if loss_type == "sigmoid":
            per_pair = -F.logsigmoid(beta * delta)
        elif loss_type == "hinge":
            per_pair = torch.relu(1 - beta * delta)
        elif loss_type in ("ipo", "sigmoid_norm"):  # per-token averages, as TRL normalizes them
            average = chosen_ratio / chosen_tokens.clamp(min=1) - rejected_ratio / rejected_tokens.clamp(min=1)
            per_pair = (average - 1 / (2 * beta)) ** 2 if loss_type == "ipo" else -F.logsigmoid(beta * average)
        elif loss_type == "robust":
            per_pair = (-(1 - label_smoothing) * F.logsigmoid(beta * delta)
                        + label_smoothing * F.logsigmoid(-beta * delta)) / (1 - 2 * label_smoothing)
        elif loss_type == "bco_pair":
            per_pair = -F.logsigmoid(beta * chosen_ratio) - F.logsigmoid(-beta * rejected_ratio)
        elif loss_type == "apo_zero":
            per_pair = 1 - torch.sigmoid(beta * chosen_ratio) + torch.sigmoid(beta * rejected_ratio)
        elif loss_type == "nca_pair":
            per_pair = (-F.logsigmoid(beta * chosen_ratio) - 0.5 * F.logsigmoid(-beta * chosen_ratio)
                        - 0.5 * F.logsigmoid(-beta * rejected_ratio))
        elif loss_type == "sppo_hard":
            per_pair = (chosen_ratio - 0.5 / beta) ** 2 + (rejected_ratio + 0.5 / beta) ** 2
        elif loss_type == "sft":
            per_pair = -chosen_token_log_probs.mean().expand(chosen.shape[0])
        else:
            raise ValueError(f"loss {loss_type!r} is not on the packed path; PACKED_DPO_LOSSES lists those that are")
        total = total + per_pair.mean() * weight
    return total
