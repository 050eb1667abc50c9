"""Constrained label choice for generative classifiers: score each label's tokens after the prompt, pick the best.

A causal LM trained by recipes/classify_generative.py is never asked to generate freely. For every
text, each label's continuation (its name and the template's end-of-turn marker, exactly the tokens the
model was trained to write) is scored by its summed log-probability; the best label is the prediction,
so it is always a valid label, and a softmax over the label scores gives per-class probabilities (ROC,
PR curves). The end-of-turn marker keeps a label that is a prefix of another ("pos" / "positive")
from winning just for being shorter.

The baseline is the untuned model making the same constrained choice from the same prompt, which
lists the label names: a real zero-shot classifier, not a strawman. Metrics, intervals, McNemar's
test, confusion matrix and ROC curves are written by the shared classification stage code.
"""

from __future__ import annotations

import gc

import numpy as np

from tuneloop.config.schema import RunConfig
from tuneloop.data.classification_prompt import classification_messages, fit_texts, read_labels
from tuneloop.data.encode import render_prompt
from tuneloop.data.labels import check_known_labels
from tuneloop.errors import DataError
from tuneloop.evaluate.classification_stage import write_classification_results
from tuneloop.evaluate.heldout import heldout_examples
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.load import load_causal_lm, load_tuned
from tuneloop.models.registry import resolve_model
from tuneloop.workspace import RunDir


def evaluate_generative_classifier(config: RunConfig, run: RunDir, data_file: str | None = None,
                                   console_print=print) -> dict:
    device = pick_device(config.model.device)
    dtype = pick_dtype(device, config.model.dtype)
    base_path = resolve_model(config.model.name, console_print)
    model, tokenizer = load_tuned(run, base_path, dtype, device)
    labels = read_labels(run.trained_weights())

    heldout, heldout_name = heldout_examples(config, run, data_file)
    check_known_labels(heldout, labels, heldout_name.split(" ")[0])
    texts = [row["text"] for row in heldout]
    truth = [row["label"] for row in heldout]
    fitted, cut = fit_texts(tokenizer, texts, labels, config.data.max_length)
    if cut:
        console_print(f"evaluate: {cut} of {len(texts)} text(s) were cut to fit data.max_length="
                      f"{config.data.max_length}, as in training")

    def choose(scorer) -> tuple[list[str], np.ndarray]:
        probabilities = label_probabilities(scorer, tokenizer, fitted, labels, config.evaluate.batch_size)
        return [labels[i] for i in probabilities.argmax(axis=1)], probabilities

    console_print(f"evaluate: {len(heldout)} {heldout_name} rows; scoring {len(labels)} labels per text "
                  "(tuned, and the untuned model's zero-shot choice as the baseline)")
    predicted, probabilities = choose(model)
    baseline_predicted = _baseline_choice(run, base_path, model, dtype, device, choose)

    results = write_classification_results(
        config, run, heldout_name=heldout_name, texts=texts, truth=truth, predicted=predicted, labels=labels,
        probabilities=probabilities, baseline_predicted=baseline_predicted,
        baseline_kind="untuned model's constrained choice (zero-shot)",
    )
    del model
    gc.collect()
    return results


def classify_with_generative(config: RunConfig, run: RunDir, text: str) -> str:
    """The predicted label of one text and its probability among the labels, e.g. 'pos (p=0.93)'."""
    device = pick_device(config.model.device)
    model, tokenizer = load_tuned(run, resolve_model(config.model.name), pick_dtype(device, config.model.dtype),
                                  device)
    labels = read_labels(run.trained_weights())
    fitted, _ = fit_texts(tokenizer, [text], labels, config.data.max_length)
    probabilities = label_probabilities(model, tokenizer, fitted, labels, 1)[0]
    best = int(probabilities.argmax())
    return f"{labels[best]} (p={probabilities[best]:.2f})"


def label_probabilities(model, tokenizer, texts: list[str], labels: list[str], batch_size: int) -> np.ndarray:
    """Rows x labels: the softmax over each label's summed log-likelihood (see label_log_likelihoods)."""
    scores = label_log_likelihoods(model, tokenizer, texts, labels, batch_size)
    scores = scores - scores.max(axis=1, keepdims=True)
    weights = np.exp(scores)
    return weights / weights.sum(axis=1, keepdims=True)


def label_log_likelihoods(model, tokenizer, texts: list[str], labels: list[str], batch_size: int) -> np.ndarray:
    """Rows x labels: log p(label's tokens + end-of-turn | prompt), summed over those tokens.

    The prompt and each continuation are tokenized together, as in training; the continuation's tokens
    are those starting at or after the prompt's last character. Sequences are padded on the left so every
    continuation ends at the last position, and only the last positions' logits are computed.
    """
    import torch

    prompts = [render_prompt(tokenizer, classification_messages(text, labels, labels[0])) for text in texts]
    endings = label_endings(tokenizer, labels)
    pairs = [(row, column) for row in range(len(texts)) for column in range(len(labels))]
    scores = np.zeros((len(texts), len(labels)))
    device = next(model.parameters()).device
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.inference_mode():
        for start in range(0, len(pairs), batch_size):
            batch = pairs[start:start + batch_size]
            encoded = tokenizer([prompts[row] + endings[column] for row, column in batch], add_special_tokens=False,
                                return_offsets_mapping=True)
            sequences = [
                (ids, [begin >= len(prompts[row]) for begin, _ in offsets])
                for (row, _), ids, offsets in zip(batch, encoded["input_ids"], encoded["offset_mapping"], strict=True)
            ]
            longest = max(len(ids) for ids, _ in sequences)
            tail = max(sum(is_target) for _, is_target in sequences)
            input_ids = torch.tensor([[pad_id] * (longest - len(ids)) + ids for ids, _ in sequences], device=device)
            attention = torch.tensor([[0] * (longest - len(ids)) + [1] * len(ids) for ids, _ in sequences],
                                     device=device)
            targets = torch.tensor([[False] * (longest - len(t)) + t for _, t in sequences], device=device)
            positions = (attention.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift the positions
            logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions,
                           logits_to_keep=tail + 1, use_cache=False).logits[:, :-1].float()
            log_probs = logits.log_softmax(-1).gather(-1, input_ids[:, -tail:].unsqueeze(-1)).squeeze(-1)
            summed = (log_probs * targets[:, -tail:]).sum(-1).cpu().numpy()
            for (row, column), value in zip(batch, summed, strict=True):
                scores[row, column] = value
    return scores


def label_endings(tokenizer, labels: list[str]) -> list[str]:
    """What the chat template appends after the prompt when the assistant answers each label."""
    endings = []
    for label in labels:
        messages = classification_messages("", labels, label)
        before = render_prompt(tokenizer, messages)
        through = tokenizer.apply_chat_template(messages, tokenize=False)
        if not through.startswith(before):
            raise DataError("the chat template renders the answer differently from its prompt, so the label tokens "
                            "cannot be located. Choose another data.chat_template (e.g. chatml or plain).")
        endings.append(through[len(before):])
    return endings


def _baseline_choice(run: RunDir, base_path: str, tuned_model, dtype, device, choose) -> list[str]:
    if run.trained_weights() == run.adapter:
        # The LoRA base is already loaded: with the adapter off it is exactly the untuned model.
        with tuned_model.disable_adapter():
            return choose(tuned_model)[0]
    base = load_causal_lm(base_path, dtype, device)
    base.eval()
    try:
        return choose(base)[0]
    finally:
        del base
        gc.collect()
