"""GGUF export read back: transformers' GGUF loader gives the same logits and tokens; a LoRA GGUF adapter
is the merged model's difference; `tuneloop export --format gguf|ollama|vllm` writes what each runtime reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import FACTS, write_config
from typer.testing import CliRunner

from tuneloop.cli import app
from tuneloop.models.export_gguf import permute_rotary_rows, write_lora_gguf, write_model_gguf

PROMPT = "When do the Larkspur stores open? They open at 7:30 every day."
# Logit tolerance per quantization on tiny random models (logits of order 1).
TOLERANCE = {"f16": 2e-3, "bf16": 2e-2, "q8_0": 5e-2}


def _gguf_logits(directory, name, ids):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(directory), gguf_file=name)
    with torch.inference_mode():
        return model(ids).logits


@pytest.mark.parametrize("quant", ["f16", "bf16", "q8_0"])
def test_llama_gguf_gives_the_same_logits_and_tokens_through_transformers(tiny_model_dir, tmp_path, quant):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    write_model_gguf(model, tokenizer, tmp_path / "model.gguf", quant)
    ids = tokenizer(PROMPT, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        expected = model(ids).logits
    difference = (_gguf_logits(tmp_path, "model.gguf", ids) - expected).abs().max().item()
    assert difference < TOLERANCE[quant], difference
    reread = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="model.gguf")
    text = PROMPT + "<|im_end|>"
    assert reread(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert reread.chat_template == tokenizer.chat_template


def test_llama_q_and_k_rows_are_stored_in_llama_cpp_rotary_order(tiny_model_dir, tmp_path):
    """Without the permutation the loader's inverse would scramble q/k and the logits test above would fail;
    this pins the layout itself: GGUF q rows are the HF rows permuted per head."""
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    write_model_gguf(model, AutoTokenizer.from_pretrained(tiny_model_dir), tmp_path / "m.gguf", "f16")
    stored = {t.name: t for t in GGUFReader(tmp_path / "m.gguf").tensors}
    q = model.model.layers[0].self_attn.q_proj.weight.detach().numpy()
    written = np.asarray(stored["blk.0.attn_q.weight"].data, dtype=np.float32).reshape(q.shape)
    assert not np.allclose(written, q, atol=1e-3)
    assert np.allclose(written, permute_rotary_rows(q, model.config.num_attention_heads), atol=1e-3)
    assert "output.weight" not in stored  # tied head: the loader ties it back


@pytest.fixture(scope="module")
def tiny_gemma3(tmp_path_factory):
    """A 2-layer Gemma 3 (random weights, random norms) with a sentencepiece-style byte-fallback BPE tokenizer."""
    from transformers import AutoTokenizer, Gemma3ForCausalLM, Gemma3TextConfig
    from transformers.models.gemma.tokenization_gemma import GemmaTokenizer

    target = tmp_path_factory.mktemp("tiny-gemma3")
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>"]
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + ["▁", "?", "."]
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("i", "n"), ("o", "n")]
    vocab = {t: i for i, t in enumerate(specials + [f"<0x{b:02X}>" for b in range(256)] + letters
                                        + ["".join(pair) for pair in merges])}
    tokenizer = GemmaTokenizer(vocab=vocab, merges=merges)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]})
    tokenizer.chat_template = (
        "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}"
        "\n{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    )
    tokenizer.save_pretrained(target)
    torch.manual_seed(0)
    # head_dim 256 = query_pre_attn_scalar, as in gemma3-270m; a window of 8 makes sliding attention matter.
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=256, max_position_embeddings=256,
        sliding_window=8, pad_token_id=0, eos_token_id=1, bos_token_id=2,
    )
    model = Gemma3ForCausalLM(config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.normal_(0, 0.3)  # zeros (Gemma's init) would hide a wrong 1 + w
    model.save_pretrained(target)
    return target, model, AutoTokenizer.from_pretrained(target)


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_gemma3_gguf_gives_the_same_logits_and_tokens_through_transformers(tiny_gemma3, tmp_path, quant):
    from transformers import AutoTokenizer

    _, model, tokenizer = tiny_gemma3
    write_model_gguf(model, tokenizer, tmp_path / "model.gguf", quant)
    text = "the cat sat in the sun on the mat?<end_of_turn>"
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    assert ids.shape[1] > 8  # longer than the sliding window
    with torch.inference_mode():
        expected = model(ids).logits
    difference = (_gguf_logits(tmp_path, "model.gguf", ids) - expected).abs().max().item()
    assert difference < TOLERANCE[quant], difference
    reread = AutoTokenizer.from_pretrained(str(tmp_path), gguf_file="model.gguf")
    assert reread(text)["input_ids"] == tokenizer(text)["input_ids"]


def test_lora_adapter_gguf_adds_up_to_the_merged_model(tiny_model_dir, tmp_path):
    """base.gguf + scale * B @ A from adapter.gguf equals the merged model's GGUF tensor, permutation included."""
    from gguf import GGUFReader
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    write_model_gguf(base, tokenizer, tmp_path / "base.gguf", "f16")
    torch.manual_seed(1)
    tuned = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "down_proj"],
                                      use_rslora=True))
    with torch.no_grad():
        for name, parameter in tuned.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)  # B starts at zero: give the adapter something to add
    tuned.save_pretrained(tmp_path / "adapter")
    write_lora_gguf(tmp_path / "adapter", base.config, tmp_path / "adapter.gguf", "f16")
    write_model_gguf(tuned.merge_and_unload(), tokenizer, tmp_path / "merged.gguf", "f16")

    def tensors(path):
        reader = GGUFReader(path)
        return reader, {t.name: np.asarray(t.data, dtype=np.float32).reshape(tuple(reversed(t.shape)))
                        for t in reader.tensors}

    reader, adapter = tensors(tmp_path / "adapter.gguf")
    _, base_tensors = tensors(tmp_path / "base.gguf")
    _, merged = tensors(tmp_path / "merged.gguf")
    assert bytes(reader.fields["general.type"].parts[-1]).decode() == "adapter"
    assert bytes(reader.fields["adapter.type"].parts[-1]).decode() == "lora"
    alpha = float(reader.fields["adapter.lora.alpha"].parts[-1][0])
    assert len(adapter) == 2 * 3 * 2  # A and B for three modules in two layers
    for name in ("blk.0.attn_q.weight", "blk.1.attn_k.weight", "blk.1.ffn_down.weight"):
        delta = adapter[name + ".lora_b"] @ adapter[name + ".lora_a"]
        rebuilt = base_tensors[name] + alpha / 4 * delta  # llama.cpp's scale: alpha / rank
        assert np.abs(rebuilt - merged[name]).max() < 5e-3, name


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, tiny_model_dir):
    """A LoRA run trained for two steps (no evaluation), with a system prompt on every row."""
    from conftest import chat_row, write_jsonl

    root = tmp_path_factory.mktemp("export-run")
    train = write_jsonl(root / "train.jsonl", [chat_row(q, a, k) for q, a, k in FACTS] * 2)
    config = write_config(root / "run.yaml", {
        "output_dir": str(root / "run"),
        "model": {"name": str(tiny_model_dir), "dtype": "fp32", "device": "cpu"},
        "data": {"train_file": str(train), "max_length": 64, "audit": {"enabled": False}},
        "train": {"method": "lora", "preset": "none", "max_steps": 2, "batch_size": 4, "eval_every": 2,
                  "save_every": 2, "lora": {"rank": 4, "alpha": 8}},
        "tracking": {"backend": "none"},
    })
    result = CliRunner().invoke(app, ["train", str(config)])
    assert result.exit_code == 0, result.output
    return root / "run"


def test_export_gguf_ollama_and_vllm_layouts(trained_run, tmp_path):
    from transformers import AutoModelForCausalLM

    runner = CliRunner()
    gguf_out = tmp_path / "gguf"
    result = runner.invoke(app, ["export", str(trained_run), "--out", str(gguf_out), "--format", "gguf",
                                 "--quant", "q8_0"])
    assert result.exit_code == 0, result.output
    assert (gguf_out / "model.gguf").is_file() and (gguf_out / "README.md").is_file()
    AutoModelForCausalLM.from_pretrained(str(gguf_out), gguf_file="model.gguf")  # loads

    ollama = tmp_path / "ollama"
    result = runner.invoke(app, ["export", str(trained_run), "--out", str(ollama), "--format", "ollama", "--adapter"])
    assert result.exit_code == 0, result.output
    modelfile = (ollama / "Modelfile").read_text()
    assert "FROM ./base.gguf" in modelfile and "ADAPTER ./adapter.gguf" in modelfile
    assert 'SYSTEM """You help customers."""' in modelfile and 'PARAMETER stop "<|im_end|>"' in modelfile
    assert "ollama create run -f Modelfile" in result.output
    assert (ollama / "adapter.gguf").is_file()

    vllm = tmp_path / "vllm"
    result = runner.invoke(app, ["export", str(trained_run), "--out", str(vllm), "--format", "vllm"])
    assert result.exit_code == 0, result.output
    assert "vllm serve ./model --served-model-name run" in (vllm / "serve.sh").read_text()
    assert (vllm / "model" / "config.json").is_file() and not (vllm / "model" / "adapter_config.json").exists()
    lora = tmp_path / "vllm-lora"
    result = runner.invoke(app, ["export", str(trained_run), "--out", str(lora), "--format", "vllm", "--adapter"])
    assert result.exit_code == 0, result.output
    script = (lora / "serve.sh").read_text()
    assert "--enable-lora --lora-modules run=./adapter --max-lora-rank 8" in script
    assert json.loads((lora / "adapter" / "adapter_config.json").read_text())["r"] == 4


def test_ollama_template_pieces_reproduce_the_chat_template(tiny_model_dir):
    """The pieces put into the Go template render conversations exactly as the Jinja template does,
    including a default system prompt the template adds when the conversation has none."""
    from transformers import AutoTokenizer

    from tuneloop.models.runtimes import go_template, turn_pieces

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.chat_template = (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are a helpful assistant<|im_end|>\n' }}{% endif %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    pieces = turn_pieces(tokenizer)
    assert "You are a helpful assistant" in pieces.opening
    for messages in ([{"role": "user", "content": "hi"}],
                     [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                      {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "bye"}]):
        assert pieces.render(messages, True) == tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True)
    template = go_template(pieces)
    assert template.count("{{") == template.count("}}") and "{{ .Content }}" in template


def test_a_prefix_tuned_run_cannot_be_merged_into_a_gguf(trained_run, tmp_path):
    from tuneloop.errors import ModelError
    from tuneloop.models.load import merged_tuned_model
    from tuneloop.workspace import RunDir

    with pytest.raises(ModelError, match="virtual tokens"):
        merged_tuned_model(RunDir(trained_run), "unused", "prefix")


def _llama_cpp_logits(path, ids, lora_path=None):
    """Logits of every position from llama.cpp (llama-cpp-python) for the given token ids."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install "
                                    "'tuneloop[llamacpp]'); transformers' GGUF loader checks the files above")
    from llama_cpp import llama as llama_module

    defaults = llama_cpp.llama_model_default_params

    def without_repacking():  # llama.cpp's AMX repacking of q8_0 crashes in VMs without AMX tile permission
        params = defaults()
        params.use_extra_bufts = False
        return params

    llama_module.llama_cpp.llama_model_default_params = without_repacking
    try:
        llm = llama_module.Llama(model_path=str(path), n_ctx=128, logits_all=True, verbose=False,
                                 **({"lora_path": str(lora_path)} if lora_path else {}))
    finally:
        llama_module.llama_cpp.llama_model_default_params = defaults
    llm.eval(list(ids))
    return np.array(llm.scores[: len(ids)]), llm


@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_llama_cpp_runs_the_llama_gguf_and_its_lora_adapter_with_the_same_logits(tiny_model_dir, tmp_path, quant):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    ids = tokenizer(PROMPT)["input_ids"]
    write_model_gguf(base, tokenizer, tmp_path / "base.gguf", quant)
    logits, llm = _llama_cpp_logits(tmp_path / "base.gguf", ids)
    assert llm.tokenize(PROMPT.encode(), add_bos=False, special=True) == ids  # same tokenizer
    with torch.inference_mode():
        expected = base(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(logits - expected).max() < TOLERANCE[quant]
    if quant != "f16":
        return
    torch.manual_seed(1)
    tuned = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                           LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "k_proj", "v_proj", "down_proj"]))
    with torch.no_grad():
        for name, parameter in tuned.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.5)
    tuned.save_pretrained(tmp_path / "adapter")
    write_lora_gguf(tmp_path / "adapter", base.config, tmp_path / "adapter.gguf", "f16")
    with torch.inference_mode():
        tuned_logits = tuned(torch.tensor([ids])).logits[0].numpy()
    adapted, _ = _llama_cpp_logits(tmp_path / "base.gguf", ids, lora_path=tmp_path / "adapter.gguf")
    assert np.abs(tuned_logits - expected).max() > 0.05  # the adapter matters
    assert np.abs(adapted - tuned_logits).max() < TOLERANCE[quant]


def test_llama_cpp_runs_the_gemma3_gguf_with_the_same_tokens_and_logits(tiny_gemma3, tmp_path):
    _, model, tokenizer = tiny_gemma3
    write_model_gguf(model, tokenizer, tmp_path / "model.gguf", "f16")
    text = "the cat sat in the sun on the mat?"
    ids = tokenizer(text)["input_ids"]
    logits, llm = _llama_cpp_logits(tmp_path / "model.gguf", ids)
    assert llm.tokenize(text.encode(), add_bos=False, special=True) == ids  # sentencepiece-style vocabulary
    with torch.inference_mode():
        expected = model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(logits - expected).max() < TOLERANCE["f16"]
