"""Write a model (or a LoRA adapter) as a GGUF file for llama.cpp, Ollama and LM Studio, with the `gguf` package.

Architectures: Llama (smollm2-135m-instruct) and Gemma 3 text (gemma3-270m). What llama.cpp's
`convert_hf_to_gguf.py` does for them, and transformers' GGUF loader undoes, is done here:
    - tensor names from gguf's TensorNameMap (`model.layers.0.self_attn.q_proj` -> `blk.0.attn_q`);
    - Llama: the rows of q_proj and k_proj permuted per head (llama.cpp's rotary layout interleaves
      the two rotated halves; transformers' LlamaTensorProcessor permutes them back);
    - Gemma 3: every RMSNorm weight stored as 1 + w (Gemma scales by 1 + w; llama.cpp multiplies by
      the stored weight; transformers' Gemma2TensorProcessor subtracts the 1 again);
    - a tied output head is not written (the loader ties it back).
Quantizations: f16, bf16 and q8_0 (the ones the gguf package can write); 1-D tensors (norms) stay
f32 and a 2-D tensor whose rows do not split into 32-value blocks falls back to f16, as in llama.cpp.

The tokenizer goes into the metadata: a byte-level BPE vocabulary (tokenizer.ggml.model "gpt2":
tokens, token types, merges) or a sentencepiece-style one with byte fallback (model "llama", as
Gemma's: tokens, scores, types, merges), the bos/eos/pad ids and the chat template.

A LoRA adapter becomes a GGUF adapter (general.type "adapter", adapter.type "lora",
adapter.lora.alpha) whose tensors are named `<base tensor>.lora_a` / `.lora_b`, as llama.cpp's
`convert_lora_to_gguf.py` writes them; `llama-cli -m base.gguf --lora adapter.gguf` loads it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from tuneloop.errors import TuneloopError

GGUF_QUANTS = ("f16", "bf16", "q8_0")
# llama.cpp's architecture names for the transformers model types exported here.
GGUF_ARCHITECTURES = {"llama": "llama", "gemma3_text": "gemma3", "gemma3": "gemma3"}


def gguf_architecture(config) -> str:
    """The llama.cpp architecture name of a transformers config, or a clear error naming what is supported."""
    name = GGUF_ARCHITECTURES.get(config.model_type)
    if name is None:
        raise TuneloopError(
            f"GGUF export supports the Llama and Gemma 3 architectures (model_type {sorted(GGUF_ARCHITECTURES)}); "
            f"this model is {config.model_type!r}. Export with --format hf and convert it with llama.cpp's "
            "convert_hf_to_gguf.py."
        )
    return name


def write_model_gguf(model, tokenizer, path: Path, quant: str = "f16", name: str | None = None) -> Path:
    """Write a (merged) causal LM and its tokenizer to one GGUF file; return its path."""
    import gguf

    config = model.config
    arch = gguf_architecture(config)
    check_exportable(config, arch)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(gguf.GGUFType.MODEL)
    writer.add_name(name or Path(getattr(config, "_name_or_path", "") or "model").name)
    writer.add_file_type(_file_type(quant))
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    add_architecture_metadata(writer, config, arch)
    add_tokenizer_metadata(writer, tokenizer, config.vocab_size)
    name_map = gguf.get_tensor_name_map(_model_arch(arch), config.num_hidden_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, tensor in model.state_dict().items():
        if tied and hf_name == "lm_head.weight":
            continue  # llama.cpp and transformers tie the output head to the embeddings themselves
        gguf_name = tensor_name(name_map, hf_name)
        data = tensor.detach().to("cpu").float().numpy()
        data = to_gguf_layout(data, gguf_name, config, arch)
        _add_tensor(writer, gguf_name, data, quant)
    _write(writer)
    return path


def write_lora_gguf(adapter_dir: Path, base_config, path: Path, quant: str = "f16") -> Path:
    """Write a PEFT LoRA adapter (adapter_model.safetensors + adapter_config.json) as a llama.cpp GGUF adapter."""
    import gguf
    from safetensors.numpy import load_file

    settings = json.loads((adapter_dir / "adapter_config.json").read_text())
    if settings.get("peft_type") != "LORA" or settings.get("use_dora"):
        raise TuneloopError(
            f"{adapter_dir}: a GGUF adapter can hold a plain LoRA adapter only (this is "
            f"{'DoRA' if settings.get('use_dora') else settings.get('peft_type')}); export the merged model instead "
            "(drop --adapter)."
        )
    arch = gguf_architecture(base_config)
    rank = settings["r"]
    alpha = float(settings["lora_alpha"])
    # llama.cpp scales by alpha / rank; rsLoRA scales by alpha / sqrt(rank): write the alpha that gives that scale.
    if settings.get("use_rslora"):
        alpha = alpha * math.sqrt(rank)
    if settings.get("rank_pattern") or settings.get("alpha_pattern"):
        raise TuneloopError(f"{adapter_dir}: per-module ranks or alphas have no GGUF adapter form; export merged.")
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
    adapter_quant = "f16" if quant == "q8_0" else quant  # rank-wide rows rarely split into 32-value blocks
    writer.add_file_type(_file_type(adapter_quant))
    name_map = gguf.get_tensor_name_map(_model_arch(arch), base_config.num_hidden_layers)
    weights = load_file(str(adapter_dir / "adapter_model.safetensors"))
    for key, value in sorted(weights.items()):
        # PEFT saves "base_model.model.<module>.lora_A.weight"; the base tensor is "<module>.weight".
        if ".lora_A." not in key and ".lora_B." not in key:
            raise TuneloopError(f"{adapter_dir}: tensor {key} is not a LoRA matrix (modules_to_save?); export merged.")
        module = key.removeprefix("base_model.model.").split(".lora_")[0]
        base_name = tensor_name(name_map, module + ".weight")
        data = value.astype(np.float32)
        if ".lora_B." in key:
            # B produces the layer's output rows: the same per-head permutation as the base weight applies to it.
            data = to_gguf_layout(data, base_name, base_config, arch)
            suffix = ".lora_b"
        else:
            suffix = ".lora_a"
        _add_tensor(writer, base_name + suffix, data, adapter_quant)
    _write(writer)
    return path


def check_exportable(config, arch: str) -> None:
    """Refuse settings a GGUF file cannot state, so the file never silently computes something else."""
    problems = []
    rope = rope_parameters(config)
    if arch == "llama" and rope.get("rope_type", "default") not in ("default", "linear", "llama3"):
        problems.append(f"rope type {rope.get('rope_type')!r}")
    if arch == "gemma3":
        pattern = ["sliding_attention" if (i + 1) % 6 else "full_attention" for i in range(config.num_hidden_layers)]
        if list(config.layer_types) != pattern:
            problems.append("a sliding/full attention pattern other than Gemma 3's five-to-one")
        if config.query_pre_attn_scalar != config.head_dim:
            problems.append(f"query_pre_attn_scalar {config.query_pre_attn_scalar} != head_dim {config.head_dim}")
        if config.final_logit_softcapping or config.attn_logit_softcapping:
            problems.append("logit soft-capping")
        local = (config.rope_parameters or {}).get("sliding_attention", {})
        if local.get("rope_theta", 10_000.0) != 10_000.0 or local.get("rope_type", "default") != "default":
            problems.append("a local rope other than base 10000")
    if problems:
        raise TuneloopError(f"GGUF export: this {arch} model has {'; '.join(problems)}, which llama.cpp's {arch} "
                            "does not read from a GGUF file. Export with --format hf.")


def rope_parameters(config) -> dict:
    """The rope settings of the global attention (transformers 5 keeps them in config.rope_parameters)."""
    rope = getattr(config, "rope_parameters", None) or {}
    if "full_attention" in rope:  # Gemma 3 keeps one entry per attention type
        rope = rope["full_attention"]
    legacy = {"rope_theta": getattr(config, "rope_theta", None)} if getattr(config, "rope_theta", None) else {}
    return legacy | dict(rope)


def add_architecture_metadata(writer, config, arch: str) -> None:
    import gguf

    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = rope_parameters(config)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(float(rope.get("rope_theta", 10_000.0)))
    writer.add_vocab_size(config.vocab_size)
    if arch == "llama":
        writer.add_rope_dimension_count(head_dim)
        if head_dim != config.hidden_size // config.num_attention_heads:
            writer.add_key_length(head_dim)
            writer.add_value_length(head_dim)
    else:  # gemma3
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
        writer.add_sliding_window(config.sliding_window)
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    elif rope.get("rope_type") == "llama3":
        raise TuneloopError("GGUF export: Llama 3 rope scaling needs llama.cpp's rope_freqs tensor, which this "
                            "exporter does not write yet. Export with --format hf and use convert_hf_to_gguf.py.")


def add_tokenizer_metadata(writer, tokenizer, vocab_size: int) -> None:
    """The vocabulary, merges, special ids and chat template, as llama.cpp reads them."""
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec["model"]
    if model["type"] != "BPE":
        raise TuneloopError(f"GGUF export: the tokenizer is {model['type']}; only BPE vocabularies are exported.")
    byte_level = "ByteLevel" in json.dumps(spec.get("pre_tokenizer")) or "ByteLevel" in json.dumps(spec.get("decoder"))
    vocab = tokenizer.get_vocab()
    tokens = [f"[PAD{i}]" for i in range(vocab_size)]
    types = [int(gguf.TokenType.UNUSED)] * vocab_size  # rows of the embedding no token uses (padding)
    for token, index in vocab.items():
        if index < vocab_size:
            tokens[index] = token
            types[index] = int(gguf.TokenType.NORMAL)
    for added in spec.get("added_tokens", []):
        if added["id"] < vocab_size:
            types[added["id"]] = int(gguf.TokenType.CONTROL if added["special"] else gguf.TokenType.USER_DEFINED)
    merges = [" ".join(pair) if isinstance(pair, list) else pair for pair in model.get("merges", [])]
    if byte_level:
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(_pre_tokenizer_name(spec))
    else:
        writer.add_tokenizer_model("llama")  # sentencepiece-style: ▁ for spaces, <0xNN> byte tokens
        writer.add_tokenizer_pre("default")
        unk = model.get("unk_token")
        for index, token in enumerate(tokens):
            if token == unk:
                types[index] = int(gguf.TokenType.UNKNOWN)
            elif len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
                types[index] = int(gguf.TokenType.BYTE)
        writer.add_token_scores([-float(i) for i in range(vocab_size)])  # earlier tokens merge first
        writer.add_add_space_prefix(False)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    if merges:
        writer.add_token_merges(merges)
    for token, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                       ("pad", writer.add_pad_token_id), ("unk", writer.add_unk_token_id)):
        token_id = getattr(tokenizer, f"{token}_token_id", None)
        if token_id is not None and token_id < vocab_size:
            add(token_id)
    probe = tokenizer("a")["input_ids"]
    writer.add_add_bos_token(bool(probe) and probe[0] == tokenizer.bos_token_id)
    writer.add_add_eos_token(bool(probe) and probe[-1] == tokenizer.eos_token_id and len(probe) > 1)
    if getattr(tokenizer, "chat_template", None):
        writer.add_chat_template(tokenizer.chat_template)


def _pre_tokenizer_name(spec: dict) -> str:
    """llama.cpp's name for the way text is split before BPE (it picks its own regex by this name)."""
    pre = spec.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    text = json.dumps(pre)
    if "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+" in text:
        return "llama-bpe"
    return "default"


def tensor_name(name_map, hf_name: str) -> str:
    """The GGUF name of a transformers parameter, e.g. model.layers.0.self_attn.q_proj.weight -> blk.0.attn_q.weight."""
    found = name_map.get_name(hf_name, try_suffixes=(".weight", ".bias"))
    if found is None:
        raise TuneloopError(f"GGUF export: no GGUF name for the tensor {hf_name}; this model has parts llama.cpp "
                            "does not know. Export with --format hf.")
    return found


def to_gguf_layout(data: np.ndarray, gguf_name: str, config, arch: str) -> np.ndarray:
    """The tensor as llama.cpp expects it: Llama's q/k rows permuted per head, Gemma's norms as 1 + w."""
    if arch == "llama" and (".attn_q." in gguf_name or ".attn_k." in gguf_name):
        heads = config.num_attention_heads if ".attn_q." in gguf_name else config.num_key_value_heads
        return permute_rotary_rows(data, heads)
    if arch == "gemma3" and gguf_name.endswith("norm.weight"):
        return data + 1.0
    return data


def permute_rotary_rows(weights: np.ndarray, heads: int) -> np.ndarray:
    """llama.cpp's `permute` (convert_hf_to_gguf.py): within each head, interleave the two rotary halves."""
    return (weights.reshape(heads, 2, weights.shape[0] // heads // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _model_arch(arch: str):
    import gguf

    return next(key for key, value in gguf.MODEL_ARCH_NAMES.items() if value == arch)


def _file_type(quant: str) -> int:
    import gguf

    types = {"f16": gguf.LlamaFileType.MOSTLY_F16, "bf16": gguf.LlamaFileType.MOSTLY_BF16,
             "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0, "f32": gguf.LlamaFileType.ALL_F32}
    if quant not in types:
        raise TuneloopError(f"--quant {quant!r}: choose one of {', '.join(GGUF_QUANTS)}.")
    return int(types[quant])


def _add_tensor(writer, name: str, data: np.ndarray, quant: str) -> None:
    import gguf

    if data.ndim < 2 or quant == "f32":
        writer.add_tensor(name, data.astype(np.float32))
        return
    qtype = {"f16": gguf.GGMLQuantizationType.F16, "bf16": gguf.GGMLQuantizationType.BF16,
             "q8_0": gguf.GGMLQuantizationType.Q8_0}[quant]
    if qtype == gguf.GGMLQuantizationType.Q8_0 and data.shape[-1] % 32:
        qtype = gguf.GGMLQuantizationType.F16  # rows must split into 32-value blocks
    if qtype == gguf.GGMLQuantizationType.F16:
        writer.add_tensor(name, data.astype(np.float16))
        return
    writer.add_tensor(name, gguf.quants.quantize(np.ascontiguousarray(data), qtype), raw_dtype=qtype)


def _write(writer) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
