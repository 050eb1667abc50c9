"""Causal-LM loss that never holds the full logits: the LM head and cross-entropy run in chunks over target tokens only.

For N target tokens, hidden size H and vocabulary V the logits are N x V floats — 1 GB per 1k tokens
for a 262k vocabulary. Here only rows whose label is not -100 are projected (prompt tokens cost
nothing), in chunks of at most `CHUNK_FLOATS` logits, and each chunk's gradient is computed at once
in the forward pass (d loss / d logits = softmax - onehot), so backward does no second projection:

    loss      = sum_i logsumexp(h_i W^T) - (h_i W^T)[y_i]
    dL/dh_i   = (softmax(h_i W^T) - onehot(y_i)) W
    dL/dW     = sum_i (softmax(h_i W^T) - onehot(y_i))^T h_i      (only when W trains)

The same idea as Liger's fused linear cross-entropy and Apple's cut-cross-entropy, which run only on
CUDA (Triton); TRL's fused LM head projects every position on a CPU. `install_chunked_loss` adds a
`tuneloop_chunked_loss=True` switch to a model's forward, so the call still goes through PEFT, DDP and
accelerate wrappers (DDP must see the forward to synchronize gradients).
"""

from __future__ import annotations

import functools
import types

CHUNK_FLOATS = 1 << 23  # 32 MB of fp32 logits per chunk: as fast as larger chunks for a 49k vocabulary
MIN_CHUNK_ROWS = 64  # a 262k vocabulary gets 64 rows (64 MB): fewer rows make the LM-head matmul slow
IGNORE_INDEX = -100
# Config fields that change the logits after the LM head; the chunked loss does not apply them.
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "output_multiplier", "lm_head_multiplier",
                     "logits_scaling")


def _function():
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        @staticmethod
        def forward(ctx, hidden, weight, targets, compute_dtype):
            rows = max(MIN_CHUNK_ROWS, CHUNK_FLOATS // weight.shape[0])
            grad_hidden = torch.empty_like(hidden)
            grad_weight = torch.zeros_like(weight, dtype=torch.float32) if weight.requires_grad else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            head = weight.detach().to(compute_dtype)
            with torch.autocast(hidden.device.type, enabled=False):
                for start in range(0, hidden.shape[0], rows):
                    h = hidden[start:start + rows].detach().to(compute_dtype)
                    y = targets[start:start + rows]
                    logits = (h @ head.T).float()
                    log_norm = torch.logsumexp(logits, dim=-1)
                    total += (log_norm - logits.gather(1, y[:, None]).squeeze(1)).sum()
                    grad_logits = logits.sub_(log_norm[:, None]).exp_()  # softmax, reusing the logits' memory
                    grad_logits[torch.arange(len(y), device=y.device), y] -= 1.0
                    grad_logits = grad_logits.to(compute_dtype)
                    grad_hidden[start:start + rows] = grad_logits @ head
                    if grad_weight is not None:
                        grad_weight += (grad_logits.T @ h).float()
            ctx.save_for_backward(grad_hidden, grad_weight)
            return total

        @staticmethod
        def backward(ctx, grad_output):
            grad_hidden, grad_weight = ctx.saved_tensors
            grad_w = None if grad_weight is None else grad_weight * grad_output
            return grad_hidden * grad_output.to(grad_hidden.dtype), grad_w, None, None

    return LinearCrossEntropy


@functools.cache
def _linear_cross_entropy_class():
    return _function()


def linear_cross_entropy_sum(hidden, weight, targets, compute_dtype=None):
    """Sum over rows of -log softmax(hidden @ weight.T)[target]; hidden [N, H], weight [V, H], targets [N]."""
    dtype = compute_dtype or hidden.dtype
    return _linear_cross_entropy_class().apply(hidden, weight, targets, dtype)


def supports_chunked_loss(causal_lm) -> bool:
    """True when the logits are a plain bias-free linear map of the last hidden state (so the chunked loss is exact)."""
    config = causal_lm.config.get_text_config()
    head = causal_lm.get_output_embeddings()
    return (
        head is not None
        and getattr(head, "bias", None) is None
        and hasattr(head, "weight")
        and all(getattr(config, name, None) in (None, 1, 1.0) for name in _LOGIT_TRANSFORMS)
    )


def install_chunked_loss(causal_lm, compute_dtype) -> None:
    """Give `causal_lm.forward` a `tuneloop_chunked_loss=True` mode returning only the loss (mean over targets, or
    sum / num_items_in_batch); other calls (generation, evaluation) run the forward it had before."""
    import torch
    from transformers.modeling_outputs import CausalLMOutput

    previous_forward = causal_lm.forward

    @functools.wraps(type(causal_lm).forward)
    def forward(self, *args, tuneloop_chunked_loss=False, labels=None, num_items_in_batch=None, **kwargs):
        if not tuneloop_chunked_loss:
            if labels is not None:
                kwargs["labels"] = labels
            if num_items_in_batch is not None:
                kwargs["num_items_in_batch"] = num_items_in_batch
            return previous_forward(*args, **kwargs)
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        targets = labels[:, 1:]
        position_ids = kwargs.get("position_ids")
        if position_ids is not None:  # packed row: a sequence's last token must not predict the next one's first
            targets = targets.masked_fill(position_ids[:, 1:] == 0, IGNORE_INDEX)
        keep = targets != IGNORE_INDEX
        head = self.get_output_embeddings()
        total = linear_cross_entropy_sum(hidden[keep], head.weight, targets[keep], compute_dtype)
        count = keep.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        if not keep.any():  # keep the graph connected so backward works on a batch with nothing to learn
            total = total + hidden.sum() * 0.0
        return CausalLMOutput(loss=total / torch.as_tensor(count, device=total.device))

    causal_lm.forward = types.MethodType(forward, causal_lm)
