"""Talk to a run's tuned model: one answer for --prompt, or an interactive session that keeps the history.

A classification run has no replies to generate; `classify_text` gives its predicted label instead, and
`tag_text` the entities a token-classification (NER) run finds.
"""

from __future__ import annotations

import torch

from tuneloop.config.schema import RunConfig
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.load import load_tuned
from tuneloop.models.registry import resolve_model
from tuneloop.workspace import RunDir

HELP = "Type a message and press Enter. /reset clears the history, /exit (or Ctrl-D) quits."


def load_chat_model(config: RunConfig, run: RunDir):
    device = pick_device(config.model.device)
    return load_tuned(run, resolve_model(config.model.name), pick_dtype(device, config.model.dtype), device)


def classify_text(config: RunConfig, run: RunDir, text: str) -> str:
    """The predicted label and its probability, e.g. 'refund_request (p=0.93)'; multi-label lists each one."""
    if config.train.classifier == "generate":
        from tuneloop.evaluate.classification_generative import classify_with_generative

        return classify_with_generative(config, run, text)
    from tuneloop.evaluate.classification_stage import MULTI_LABEL_THRESHOLD, predict_probabilities
    from tuneloop.models.load import load_tuned_classifier

    device = pick_device(config.model.device)
    model, tokenizer = load_tuned_classifier(run, resolve_model(config.model.name), pick_dtype(device,
                                             config.model.dtype), device)
    multi_label = model.config.problem_type == "multi_label_classification"
    probabilities = predict_probabilities(model, tokenizer, [text], config.data.max_length, 1, multi_label)[0]
    if multi_label:
        chosen = [i for i, p in enumerate(probabilities) if p >= MULTI_LABEL_THRESHOLD]
    else:
        chosen = [int(probabilities.argmax())]
    if not chosen:
        return f"(no label above {MULTI_LABEL_THRESHOLD})"
    return ", ".join(f"{model.config.id2label[i]} (p={probabilities[i]:.2f})" for i in chosen)


def tag_text(config: RunConfig, run: RunDir, text: str) -> str:
    """Each word with its predicted tag, then the entities, e.g. 'Peter/B-PER lives/O ...' and 'Peter (PER)'."""
    from tuneloop.evaluate.token_classification import entities_text
    from tuneloop.evaluate.token_classification_stage import predict_word_tags
    from tuneloop.models.load import load_tuned_classifier

    device = pick_device(config.model.device)
    model, tokenizer = load_tuned_classifier(run, resolve_model(config.model.name), pick_dtype(device,
                                             config.model.dtype), device)
    words = text.split()
    if not words:
        return "(no words)"
    (tags,), _ = predict_word_tags(model, tokenizer, [words], config.data.max_length, 1)
    return " ".join(f"{word}/{tag}" for word, tag in zip(words, tags, strict=True)) + "\n" + entities_text(words, tags)


@torch.inference_mode()
def reply(model, tokenizer, messages: list[dict], max_new_tokens: int = 256, temperature: float = 0.0,
          stream: bool = False) -> str:
    from transformers import TextStreamer

    device = next(model.parameters()).device
    encoder_decoder = getattr(model.config, "is_encoder_decoder", False)
    if encoder_decoder:  # T5, BART: the conversation is one source text, as in training (tuneloop.data.pairs)
        from tuneloop.data.pairs import source_text

        source = source_text([*messages, {"role": "assistant", "content": ""}])
        encoded = tokenizer(source, return_tensors="pt").to(device)
    else:
        encoded = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        ).to(device)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    output = model.generate(
        **encoded,
        max_new_tokens=max_new_tokens,
        pad_token_id=tokenizer.pad_token_id,
        streamer=TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None,
        **sampling,
    )
    new_tokens = output[0] if encoder_decoder else output[0, encoded["input_ids"].shape[1] :]
    return tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


def interactive(model, tokenizer, system: str | None, max_new_tokens: int, temperature: float) -> None:
    start = [{"role": "system", "content": system}] if system else []
    messages = list(start)
    print(HELP)
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return
        if not text:
            continue
        if text in ("/exit", "/quit"):
            return
        if text == "/reset":
            messages = list(start)
            print("(history cleared)")
            continue
        messages.append({"role": "user", "content": text})
        print("model> ", end="", flush=True)
        answer = reply(model, tokenizer, messages, max_new_tokens, temperature, stream=True)
        messages.append({"role": "assistant", "content": answer})
