"""Preference pairs on the fast path: packed padding-free with one prompt per pair, log-probs of reply tokens only.

TRL's DPOTrainer pads each batch to its longest sequence (chosen and rejected stacked) and projects every
position through the LM head, prompt tokens included. Here:
- `pack_pairs` puts a batch's pairs back to back in one row, each as prompt, chosen, rejected: no padding
  token is computed and each prompt is computed once for both replies (HH prompts are half of every
  sequence); the packed attention (tuneloop.train.packed_attention) lets each reply see its prompt and
  itself only, so every reply's log-prob is the one it has after its own copy of the prompt.
- `install_reply_log_probs` adds a `tuneloop_reply_log_probs=True` mode to a causal LM's forward (so the call
  still goes through PEFT, DDP and accelerate wrappers): it returns the log-prob of each reply token; the
  LM head runs only on the positions that predict a reply token, in chunks, and the
  full logits never exist (TRL's fused LM head does this on Triton devices only; on a CPU it scores every position).
- `sequence_log_probs` sums them per sequence; `preference_losses` turns them into the DPO-family losses.
- `pack_continuations` (KTO's KL completions, which take no gradient) scores a second reply per prompt in a
  no-grad pass that reads the prompt from the key/value cache the main pass left: the main pass's backward then
  covers prompt and completion only, and no prompt is computed twice.

The reference log-probs are not here: recipes/dpo.py computes them once before training with the same packed
forward (adapter switched off) and caches them in the dataset.
"""

from __future__ import annotations

import functools
import types

from tuneloop.train.chunked_loss import CHUNK_FLOATS, MIN_CHUNK_ROWS
from tuneloop.train.packed_attention import CONTINUATION_SPANS, PAIR_SPANS

# Losses computed from the summed log-probs of chosen and rejected replies alone (plus the reply lengths for
# ipo); the others in TRL's list need TRL's padded path.
PACKED_DPO_LOSSES = ("sigmoid", "hinge", "ipo", "robust", "bco_pair", "apo_zero", "nca_pair", "sppo_hard",
                     "sigmoid_norm", "sft")


# The replies of a row: DPO's chosen and rejected; KTO's completion, trained on, with the mismatched completion TRL
# pairs with the row's prompt for the KL estimate as a continuation (no gradient; absent without the KL term).
PAIR_SIDES = ("chosen_ids", "rejected_ids")
KTO_SIDES = ("completion_ids",)
KL_SIDE = "KL_completion_ids"
# Cached reference log-probs a row may carry through to the batch (KTO's label comes through as well).
CARRIED_COLUMNS = ("ref_chosen_logps", "ref_rejected_logps", "ref_logps", "ref_KL_logps")


def pack_pairs(examples: list[dict], max_length: int | None, sides: tuple[str, ...] = PAIR_SIDES) -> dict:
    """One padding-free row from rows of prompt_ids and one or two replies (and cached ref log-probs if present).

    Each row is laid out prompt, first reply, second reply: the prompt is computed once for both replies (the
    attention keeps the second reply from seeing the first, and its position ids continue from the prompt, as if
    it followed its own copy). Each sequence is prompt + reply cut to max_length from the end (the prompt was
    already fitted to its share of max_length by tuneloop.recipes.preference_data). Sequence i < B is row i's
    first reply, B + i its second; every reply token comes with the row position whose hidden state predicts it.
    """
    import torch

    rows = len(examples)
    ids, positions, spans = [], [], []
    predictors, targets, sequence_index = [], [], []
    sequence_tokens = [0] * (len(sides) * rows)
    for row, example in enumerate(examples):
        prompt = example["prompt_ids"][:max_length]
        room = None if max_length is None else max_length - len(prompt)
        start = len(ids)
        ids += prompt
        positions += range(len(prompt))
        span = [start]
        for side_number, side in enumerate(sides):
            reply = example[side][:room]
            sequence = side_number * rows + row
            span.append(len(ids))
            # Reply token j is predicted at the token before it: the prompt's last token for j = 0.
            before = [start + len(prompt) - 1] + list(range(len(ids), len(ids) + len(reply) - 1))
            if not prompt:  # a reply with no prompt: its first token is predicted by nothing
                before, reply_targets = before[1:], reply[1:]
            else:
                reply_targets = reply
            predictors += before[:len(reply_targets)]
            targets += reply_targets
            sequence_index += [sequence] * len(reply_targets)
            ids += reply
            positions += range(len(prompt), len(prompt) + len(reply))
            sequence_tokens[sequence] = len(prompt) + len(reply)
        span += [len(ids)] * (4 - len(span))
        spans.append(span)
    batch = {
        "input_ids": torch.tensor([ids]),
        "position_ids": torch.tensor([positions]),
        PAIR_SPANS: torch.tensor(spans, dtype=torch.int64),
        "reply_predictors": torch.tensor(predictors, dtype=torch.int64),
        "reply_targets": torch.tensor(targets, dtype=torch.int64),
        "sequence_index": torch.tensor(sequence_index, dtype=torch.int64),
        # Each sequence's prompt + reply: what a padded trainer counts as its non-padding tokens.
        "sequence_tokens": torch.tensor(sequence_tokens),
    }
    for key in CARRIED_COLUMNS:
        if key in examples[0]:
            batch[key] = torch.tensor([example[key] for example in examples], dtype=torch.float32)
    if "label" in examples[0]:
        batch["label"] = torch.tensor([bool(example["label"]) for example in examples])
    return batch


def pack_continuations(examples: list[dict], max_length: int | None, side: str, main: dict) -> dict:
    """A row of each example's `side` reply as a continuation of its prompt in `main` (a `pack_pairs` batch).

    The continuation pass runs after the main one and reads each prompt's keys and values from the cache that pass
    filled, so a prompt is computed once. Each continuation starts with its prompt's last token again (its hidden
    state predicts the reply's first token; the main pass's copy of it belongs to the trained reply) and attends to
    the rest of its prompt in the cache. Its sequences are numbered after main's, and the returned keys are
    prefixed `continuation_` (sequence_tokens is main's extended by these).
    """
    import torch

    ids, positions, spans, predictors, targets, sequence_index, sequence_tokens = [], [], [], [], [], [], []
    first_sequence = main["sequence_tokens"].numel()
    for row, (example, main_span) in enumerate(zip(examples, main[PAIR_SPANS].tolist(), strict=True)):
        prompt_start, prompt_end = main_span[0], main_span[1]
        prompt_length = prompt_end - prompt_start
        room = None if max_length is None else max_length - prompt_length
        reply = example[side][:room]
        last = example["prompt_ids"][prompt_length - 1:prompt_length]  # the prompt's last token, or none
        sequence = (last + reply)[:-1]  # the last reply token predicts nothing
        start = len(ids)
        spans.append([prompt_start, prompt_end - len(last), start, start + len(sequence)])
        predictors += range(start, start + len(sequence))
        targets += (last + reply)[1:]
        sequence_index += [first_sequence + row] * len(sequence)
        ids += sequence
        positions += range(prompt_length - len(last), prompt_length - len(last) + len(sequence))
        sequence_tokens.append(prompt_length + len(reply))
    return {
        "continuation_input_ids": torch.tensor([ids], dtype=torch.int64),
        "continuation_position_ids": torch.tensor([positions], dtype=torch.int64),
        "continuation_spans": torch.tensor(spans, dtype=torch.int64),
        "continuation_predictors": torch.tensor(predictors, dtype=torch.int64),
        "continuation_targets": torch.tensor(targets, dtype=torch.int64),
        "continuation_sequence_index": torch.tensor(sequence_index, dtype=torch.int64),
        "sequence_tokens": torch.cat([main["sequence_tokens"], torch.tensor(sequence_tokens, dtype=torch.int64)]),
    }


class PackedPairCollator:
    """The data collator giving `pack_pairs` batches, with `pack_continuations` of `continuation` where the examples
    have it (the Trainer moves the tensors to the device)."""

    def __init__(self, max_length: int | None, sides: tuple[str, ...] = PAIR_SIDES,
                 continuation: str | None = None) -> None:
        self.max_length = max_length
        self.sides = sides
        self.continuation = continuation

    def __call__(self, examples: list[dict]) -> dict:
        sides = tuple(side for side in self.sides if side in examples[0])
        batch = pack_pairs(examples, self.max_length, sides)
        if self.continuation is not None and self.continuation in examples[0]:
            batch.update(pack_continuations(examples, self.max_length, self.continuation, batch))
        return batch


def _log_prob_function():
    import torch

    class LinearLogProb(torch.autograd.Function):
        """log softmax(hidden @ weight.T)[target] per row, in chunks; backward recomputes each chunk's softmax.

        d logp_i / d z_i = onehot(y_i) - softmax(z_i), scaled by the incoming gradient of row i.
        """

        @staticmethod
        def forward(ctx, hidden, weight, targets, compute_dtype, with_entropy):
            log_probs, log_norms, entropies = _chunked_log_probs(hidden, weight, targets, compute_dtype, with_entropy)
            ctx.compute_dtype = compute_dtype
            ctx.save_for_backward(hidden, weight, targets, log_norms)
            ctx.mark_non_differentiable(entropies)  # logged, not trained on
            return log_probs, entropies

        @staticmethod
        def backward(ctx, grad_output, grad_entropies):
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
            return grad_hidden, None if grad_weight is None else grad_weight.to(weight.dtype), None, None, None

    return LinearLogProb


def _chunk_rows(weight) -> int:
    return max(MIN_CHUNK_ROWS, CHUNK_FLOATS // weight.shape[0])


def _chunked_log_probs(hidden, weight, targets, compute_dtype, with_entropy: bool = False):
    """(log-prob of each row's target, log-normalizer of each row, entropy of each row's distribution or an empty
    tensor), never more than one chunk of logits at once."""
    import torch

    rows = _chunk_rows(weight)
    head = weight.detach().to(compute_dtype)
    log_probs = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
    log_norms = torch.empty_like(log_probs)
    entropies = torch.empty(hidden.shape[0] if with_entropy else 0, dtype=torch.float32, device=hidden.device)
    with torch.no_grad(), torch.autocast(hidden.device.type, enabled=False):
        for start in range(0, hidden.shape[0], rows):
            logits = (hidden[start:start + rows].detach().to(compute_dtype) @ head.T).float()
            log_norm = torch.logsumexp(logits, dim=-1)
            log_norms[start:start + rows] = log_norm
            picked = logits.gather(1, targets[start:start + rows, None]).squeeze(1)
            log_probs[start:start + rows] = picked - log_norm
            if with_entropy:  # H = log Z - sum_v p_v z_v
                probabilities = (logits - log_norm[:, None]).exp_()
                entropies[start:start + rows] = log_norm - (probabilities * logits).sum(-1)
    return log_probs, log_norms, entropies


@functools.cache
def _log_prob_class():
    return _log_prob_function()


def linear_log_probs(hidden, weight, targets, compute_dtype=None, with_entropy: bool = False):
    """log softmax(hidden @ weight.T)[targets] for hidden [N, H], weight [V, H], targets [N]; differentiable.

    with_entropy: return (log-probs, the entropy of each row's distribution [N], not differentiable).
    """
    import torch

    dtype = compute_dtype or hidden.dtype
    if not torch.is_grad_enabled() or not (hidden.requires_grad or weight.requires_grad):
        log_probs, _, entropies = _chunked_log_probs(hidden, weight, targets, dtype, with_entropy)
    else:
        log_probs, entropies = _log_prob_class().apply(hidden, weight, targets, dtype, with_entropy)
    return (log_probs, entropies) if with_entropy else log_probs


def install_reply_log_probs(causal_lm, compute_dtype) -> None:
    """Give `causal_lm.forward` a `tuneloop_reply_log_probs=True` mode for `pack_pairs` batches.

    That mode takes the batch's `reply_predictors` and `reply_targets` and returns the log-prob of every reply
    token [M] (with `tuneloop_reply_entropy=True`, also the entropy of each of those predictions [M]); the LM
    head runs on those positions only; `tuneloop_temperature` divides the logits first (GRPO scores replies under
    the distribution it sampled them from). Other calls run the forward it had. Install it before TRL's trainer adds
    its fused LM head: that head passes unknown keywords on to this forward.
    """
    previous_forward = causal_lm.forward

    @functools.wraps(type(causal_lm).forward)
    def forward(self, *args, tuneloop_reply_log_probs=False, reply_predictors=None, reply_targets=None,
                tuneloop_reply_entropy=False, tuneloop_temperature=1.0, **kwargs):
        if not tuneloop_reply_log_probs:
            return previous_forward(*args, **kwargs)
        kwargs["use_cache"] = False
        kwargs.pop("labels", None)
        hidden = self.base_model(*args, **kwargs).last_hidden_state[0][reply_predictors]
        if tuneloop_temperature != 1.0:  # (h / T) W^T = logits / T: the sampling distribution's log-probs
            hidden = hidden / tuneloop_temperature
        head = self.get_output_embeddings()
        return linear_log_probs(hidden, head.weight, reply_targets, compute_dtype,
                                with_entropy=tuneloop_reply_entropy)

    causal_lm.forward = types.MethodType(forward, causal_lm)


def sequence_log_probs(model, batch: dict) -> tuple:
    """(summed reply log-prob of each sequence [S], reply tokens of each [S], every reply token's log-prob [M]).

    A batch with continuations (`pack_continuations`) scores them after the main row, without gradients, from
    the prompts' keys and values that pass left in a cache.
    """
    import torch
    from transformers import DynamicCache

    inputs = {key: batch[key] for key in ("input_ids", "position_ids", PAIR_SPANS, "reply_predictors",
                                          "reply_targets")}
    continued = "continuation_input_ids" in batch
    if continued:  # a cache built without the model's config keeps every position, even on sliding-window layers
        inputs["cache"] = DynamicCache()
    log_probs = model(**inputs, tuneloop_reply_log_probs=True)
    index = batch["sequence_index"]
    if continued:
        with torch.no_grad():
            continuation = model(input_ids=batch["continuation_input_ids"],
                                 position_ids=batch["continuation_position_ids"], cache=inputs["cache"],
                                 reply_predictors=batch["continuation_predictors"],
                                 reply_targets=batch["continuation_targets"],
                                 tuneloop_reply_log_probs=True, **{CONTINUATION_SPANS: batch["continuation_spans"]})
        log_probs = torch.cat([log_probs, continuation])
        index = torch.cat([index, batch["continuation_sequence_index"]])
    sequences = batch["sequence_tokens"].numel()
    sums = torch.zeros(sequences, dtype=torch.float32, device=index.device).index_add(0, index, log_probs)
    counts = torch.bincount(index, minlength=sequences)
    return sums, counts, log_probs


class PackedTrainerSteps:
    """What DPO's and KTO's packed trainers share (mixed in before TRL's trainer class): the reference pass and
    loss-only evaluation."""

    def reference_log_probs(self, model, inputs):
        """Every sequence's summed reply log-prob under the reference: with LoRA, the adapter switched off, or
        TRL's frozen "ref" copy of an adapter training continues (model.adapter)."""
        import contextlib

        import torch
        from accelerate.utils import is_peft_model
        from trl.trainer.utils import use_adapter

        unwrapped = self.accelerator.unwrap_model(self.model)
        adapter_off = (use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
                       if self.ref_model is None and is_peft_model(unwrapped) else contextlib.nullcontext())
        with torch.no_grad(), adapter_off, self.accelerator.autocast():
            sums, _, _ = sequence_log_probs(model, inputs)
        return sums

    def prediction_step(self, model, inputs, prediction_loss_only, ignore_keys=None):
        # Evaluation reports the loss (and the trainer's metrics); packed rows have no per-example logits to return.
        import torch

        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None


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


def kto_losses(loss_type: str, beta: float, desirable_weight: float, undesirable_weight: float, log_probs,
               ref_log_probs, labels, kl):
    """TRL's KTO losses (kto, apo_zero_unpaired) per row [B] from summed reply log-probs, with each row's reward.

    labels: True for a desirable row; kl: the batch's detached KL estimate (kto only; TRL clamps it at 0).
    """
    import torch

    ratios = log_probs - ref_log_probs
    if loss_type == "kto":
        losses = torch.where(labels, 1 - torch.sigmoid(beta * (ratios - kl)), 1 - torch.sigmoid(beta * (kl - ratios)))
    elif loss_type == "apo_zero_unpaired":
        losses = torch.where(labels, 1 - torch.sigmoid(beta * ratios), torch.sigmoid(beta * ratios))
    else:
        raise ValueError(f"KTO loss {loss_type!r}: kto or apo_zero_unpaired")
    weights = torch.where(labels, desirable_weight, undesirable_weight)
    return losses * weights, beta * ratios.detach()
