"""Load a model and its tokenizer: the base causal (or encoder-decoder) LM of a config, or the tuned model
(or classifier) of a run."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from tuneloop.errors import ModelError
from tuneloop.workspace import RunDir


def quiet_transformers() -> None:
    """Keep transformers' load-time chatter (progress bars, notices) off the user's screen."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.getLogger("peft").setLevel(logging.ERROR)


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # OSError for a missing hub id offline, ValueError for odd directories
        raise ModelError(f"could not load the tokenizer of {path!r}: {exc}") from None
    if tokenizer.pad_token is None:
        # Padding is masked out of attention and loss, so any token serves; EOS is the usual choice.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: str, dtype: torch.dtype = torch.float32, device: str = "cpu", attention: str | None = None):
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    try:
        options = {"attn_implementation": attention} if attention else {}
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, **options)
    except Exception as exc:
        raise ModelError(
            f"could not load the model {path!r}: {exc}\n"
            "Use a registry name (`tuneloop models list`), a local HF directory or a .gguf file."
        ) from None
    return model.to(device)


def is_causal_lm(path: str) -> bool:
    """True for a decoder-only language model (Llama, Gemma, ...), False for an encoder such as BERT.

    BERT-style models also have a causal-LM class in transformers, so "has a masked-LM class" is what
    marks an encoder here.
    """
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    try:
        model_type = AutoConfig.from_pretrained(path).model_type
    except Exception as exc:  # OSError for a missing directory, ValueError for an unknown architecture
        raise ModelError(f"could not read the model config of {path!r}: {exc}") from None
    return model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def is_encoder_decoder(path: str) -> bool:
    """Whether the model at path (directory or hub id) is an encoder-decoder (T5, BART): its config says so."""
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path)
    except Exception as exc:
        raise ModelError(
            f"could not read the config of the model {path!r}: {exc}\n"
            "Use a registry name (`tuneloop models list`), a local HF directory or a .gguf file."
        ) from None
    return bool(getattr(config, "is_encoder_decoder", False))


def load_seq2seq_lm(path: str, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    from transformers import AutoModelForSeq2SeqLM

    quiet_transformers()
    try:
        model = AutoModelForSeq2SeqLM.from_pretrained(path, dtype=dtype)
    except Exception as exc:
        raise ModelError(f"could not load the encoder-decoder model {path!r}: {exc}") from None
    return model.to(device)


def load_generator(path: str, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """The model that writes replies: encoder-decoder (T5, BART) when its config says so, else causal."""
    if is_encoder_decoder(path):
        return load_seq2seq_lm(path, dtype, device)
    return load_causal_lm(path, dtype, device)


def load_tuned(run: RunDir, base_path: str, dtype: torch.dtype, device: str):
    """The run's tuned model (base + adapter, or the full fine-tune) and the tokenizer saved with it."""
    weights = run.trained_weights()
    if weights is None:
        raise ModelError(
            f"{run.root}: no trained adapter or model yet. Train first: `tuneloop train {run.config}`"
            " (or `tuneloop run` it), or `--resume` an interrupted run."
        )
    tokenizer = load_tokenizer(str(weights))
    if weights == run.adapter:
        from peft import PeftModel

        base = load_generator(base_path, dtype, device)
        model = PeftModel.from_pretrained(base, str(weights))
    else:
        model = load_generator(str(weights), dtype, device)
    model.eval()
    return model, tokenizer


# PEFT methods whose learned change folds into the base weights; prefix and prompt tuning add virtual tokens instead.
MERGEABLE_METHODS = ("lora", "dora", "qlora", "ia3")


def merged_tuned_model(run: RunDir, base_path: str, method: str, dtype: torch.dtype = torch.float32):
    """The run's adapter folded into an fp32 copy of its base: one plain transformers model, on the CPU."""
    if method not in MERGEABLE_METHODS:
        raise ModelError(
            f"{run.root}: a {method} adapter adds virtual tokens in front of every input; it cannot be folded into "
            "the base weights. Export the adapter itself (`tuneloop export RUN --out DIR --format hf`) and load it "
            "with peft.PeftModel, or train with train.method: lora."
        )
    from peft import PeftModel

    base = load_generator(base_path, dtype, "cpu")  # causal or T5/BART
    return PeftModel.from_pretrained(base, str(run.adapter)).merge_and_unload()


def base_path_of(weights: Path) -> str | None:
    """The base model an adapter was trained on, as recorded in its adapter_config.json."""
    import json

    config = weights / "adapter_config.json"
    if not config.is_file():
        return None
    return json.loads(config.read_text()).get("base_model_name_or_path")


def load_tuned_classifier(run: RunDir, base_path: str, dtype: torch.dtype, device: str):
    """A classification run's tuned model (full, or base encoder + adapter) with id2label, and its tokenizer.

    A token-classification run (NER) gets its tagger: the same load with a tag per token instead of per text.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

    model_class = (AutoModelForTokenClassification if run.data_format() == "token_classification"
                   else AutoModelForSequenceClassification)
    weights = run.trained_weights()
    if weights is None:
        raise ModelError(f"{run.root}: no trained classifier yet. Train first: `tuneloop run {run.config}`.")
    quiet_transformers()
    tokenizer = load_tokenizer(str(weights))
    # The classification config (labels, problem type) is saved beside the adapter too; see recipes/classify.py.
    config = AutoConfig.from_pretrained(str(weights))
    if weights == run.adapter:
        from peft import PeftModel

        # The adapter carries the trained head; the base's own head, if any, may have another size.
        base = model_class.from_pretrained(base_path, config=config, dtype=dtype, ignore_mismatched_sizes=True)
        model = PeftModel.from_pretrained(base, str(weights))
    else:
        model = model_class.from_pretrained(str(weights), config=config, dtype=dtype)
    model.to(device).eval()
    return model, tokenizer
