"""The model and tokenizer a causal-LM recipe trains: the chat template chosen, the base loaded in the right dtype,
wrapped in train.method's adapter (or QLoRA's 4-bit base), with the fast path's attention and activations.

SFT, DPO, KTO, GRPO, continued pretraining, the generative classifier and `tuneloop data estimate` share these.
"""

from __future__ import annotations

from tuneloop.config.schema import RunConfig
from tuneloop.data.templates import apply_template_choice
from tuneloop.errors import ConfigError, TuneloopError
from tuneloop.models.load import load_causal_lm, load_tokenizer
from tuneloop.train.arguments import BASE_CHANGING_INITS, uses_adapter, wrap_with_adapter
from tuneloop.train.guard.freeze import freeze_lowest_blocks
from tuneloop.train.lean_activations import recompute_cheap_activations
from tuneloop.train.packed_attention import register_packed_attention
from tuneloop.workspace import RunDir


def setup_tokenizer(config: RunConfig, base_path: str):
    tokenizer = load_tokenizer(base_path)
    apply_template_choice(tokenizer, config.data.chat_template, config.model.name)
    return tokenizer


def setup_model(config: RunConfig, base_path: str, device: str, compute_dtype, run: RunDir | None = None):
    """The model to train: the base wrapped in train.method's adapter, or the whole model (full).

    run: where a PiSSA/OLoRA adapter keeps its starting point, to convert the trained one back (the SFT recipe's save).
    """
    import torch

    method = config.train.method
    # Trained weights stay fp32 (the optimizer's master copy); autocast runs the matmuls in the compute dtype.
    # Frozen base weights under an adapter need no master copy: kept in the compute dtype they are half the
    # memory and autocast no longer converts them on every matmul.
    adapter = uses_adapter(method)
    weights_dtype = compute_dtype if adapter and config.train.low_precision_base else torch.float32
    attention = register_packed_attention() if config.train.packing else None
    if method == "qlora":
        model = load_4bit_causal_lm(base_path, compute_dtype, device, attention)
    else:
        model = load_causal_lm(base_path, weights_dtype, device, attention)
    model.config.use_cache = False  # the KV cache is useless in training and costs memory
    if config.train.lean_activations:
        recompute_cheap_activations(model)
    if not adapter:
        if config.train.guard.freeze_layers:
            freeze_lowest_blocks(model, config.train.guard.freeze_layers)
        return model
    model = wrap_with_adapter(model, config, "CAUSAL_LM")  # PEFT keeps the adapter weights in fp32
    if weights_dtype != torch.float32 and method != "qlora":
        keep_adapter_inputs_in_compute_dtype(model)
    if method in ("lora", "dora", "qlora") and config.train.lora.init in BASE_CHANGING_INITS:
        if run is None:  # the recipe saves its own adapter, without the conversion below
            raise ConfigError(f"train.lora.init: {config.train.lora.init} is supported by the SFT recipe (chat, "
                              "instruction data); use init: default or gaussian here.")
        save_initial_adapter(model, run)
    return model


def load_4bit_causal_lm(base_path: str, compute_dtype, device: str, attention: str | None):
    """The base quantized to 4-bit NF4 by bitsandbytes (QLoRA), ready for k-bit training."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise TuneloopError(
            "train.method: qlora needs bitsandbytes, which is not installed. Install it with "
            "`pip install 'tuneloop[qlora]'` (or `pip install bitsandbytes`); QLoRA is meant for CUDA GPUs, where "
            "it cuts the base's memory about 4x. On a CPU it runs, but far slower than lora."
        ) from None
    from peft import prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    quantization = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                      bnb_4bit_compute_dtype=compute_dtype)
    options = {"attn_implementation": attention} if attention else {}
    try:
        model = AutoModelForCausalLM.from_pretrained(base_path, quantization_config=quantization, device_map=device,
                                                     **options)
    except Exception as exc:  # transformers refuses 4-bit where bitsandbytes has no backend for the device
        raise TuneloopError(f"train.method: qlora could not load {base_path} in 4-bit on {device}: {exc}\n"
                            "QLoRA needs a CUDA GPU (or a bitsandbytes build for this device); use lora.") from None
    return prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


INITIAL_ADAPTER = "adapter_init"


def save_initial_adapter(model, run: RunDir) -> None:
    """PiSSA/OLoRA move part of the base weights into the adapter; the starting adapter lets PEFT convert the
    trained one into a plain LoRA (of twice the rank) that works on the untouched base."""
    settings = model.peft_config["default"]
    init = settings.init_lora_weights
    settings.init_lora_weights = True  # saved as a plain starting point, as PEFT's conversion expects
    model.save_pretrained(str(run.root / INITIAL_ADAPTER))
    settings.init_lora_weights = init


def keep_adapter_inputs_in_compute_dtype(model) -> None:
    """Stop PEFT from casting each LoRA layer's input to the adapter's fp32 before autocast casts it back.

    Training runs under autocast (bf16=True in the arguments), which runs the adapter matmul in the compute
    dtype either way. PEFT's round trip made a separate bf16 copy of the input for every adapter, each kept
    for backward: q, k and v saved three copies of one tensor. Without it the adapters save the input they
    share (on smollm2-135m their saved inputs fell from 200 to 100 KB per token).
    """
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.cast_input_dtype_enabled = False
