"""Classification with a causal LM (the tiny random Llama): a score head, or the label written as text and chosen
by constrained scoring; end to end through the stages, plus the scoring maths and the invalid combinations."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import write_config
from test_classify import invoke, toy_rows, write_csv

from tuneloop.config.load import validate_config
from tuneloop.errors import ConfigError
from tuneloop.workspace import RunDir, read_json, read_jsonl, write_json, write_jsonl


def llm_config(root: Path, model_dir: Path, **train) -> dict:
    return {
        "output_dir": str(root / "run"),
        "model": {"name": str(model_dir), "dtype": "fp32", "device": "cpu"},
        "data": {"train_file": str(write_csv(root / "train.csv", toy_rows(90))),
                 "test_file": str(write_csv(root / "test.csv", toy_rows(30, offset=500))), "max_length": 128},
        "train": {"method": "full", "preset": "none", "epochs": 8, "learning_rate": 3e-3, "batch_size": 16,
                  "eval_every": 10, "save_every": 10, "logging_steps": 5, "early_stopping_patience": None, **train},
        "evaluate": {"batch_size": 16},
        "tracking": {"backend": "none"},
    }


@pytest.fixture(scope="module")
def llama_without_pad_id(tmp_path_factory, tiny_model_dir) -> Path:
    """The tiny Llama with no pad_token_id in its config, like many causal LMs; the recipe must set it."""
    target = tmp_path_factory.mktemp("llama-no-pad") / "model"
    shutil.copytree(tiny_model_dir, target)
    config = json.loads((target / "config.json").read_text())
    config["pad_token_id"] = None
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.fixture(scope="module")
def head_run(tmp_path_factory, llama_without_pad_id) -> RunDir:
    root = tmp_path_factory.mktemp("llm-head")
    result = invoke("run", str(write_config(root / "run.yaml", llm_config(root, llama_without_pad_id))))
    assert result.exit_code == 0, result.output
    return RunDir(root / "run")


def test_causal_lm_head_beats_the_majority_class(head_run):
    metrics = read_json(head_run.metrics)
    assert metrics["baseline_kind"] == "majority class"
    assert metrics["baseline"]["accuracy"] == pytest.approx(100 * 20 / 30)
    assert metrics["tuned"]["accuracy"] > metrics["baseline"]["accuracy"]
    assert set(metrics["classification"]["roc_curves"]) == {"neg", "pos"}
    assert read_json(head_run.root / "train_summary.json")["classifier"] == "head"
    saved = json.loads((head_run.model / "config.json").read_text())
    assert saved["architectures"] == ["LlamaForSequenceClassification"]
    assert saved["pad_token_id"] == 0  # the tokenizer's "<pad>", which the base model's config did not name


def test_causal_lm_head_export_keeps_label_names_and_chat_labels_text(head_run, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "export"
    assert invoke("export", str(head_run.root), "--out", str(out)).exit_code == 0
    exported = AutoModelForSequenceClassification.from_pretrained(out).config
    assert exported.id2label == {0: "neg", 1: "pos"} and exported.pad_token_id == 0
    result = invoke("chat", str(head_run.root), "--prompt", "the food was awful")
    assert result.output.strip().split(" (p=")[0] in ("neg", "pos")


def test_causal_lm_head_with_lora_trains_the_score_head(tmp_path, llama_without_pad_id):
    from tuneloop.models.load import load_tuned_classifier

    raw = llm_config(tmp_path, llama_without_pad_id, method="lora", max_steps=4, eval_every=2, save_every=2,
                     lora={"rank": 4, "alpha": 8, "dropout": 0.0})
    assert invoke("run", str(write_config(tmp_path / "run.yaml", raw))).exit_code == 0
    run = RunDir(tmp_path / "run")
    assert "score" in json.loads((run.adapter / "adapter_config.json").read_text())["modules_to_save"]
    model, _ = load_tuned_classifier(run, str(llama_without_pad_id), torch.float32, "cpu")
    assert model.config.id2label == {0: "neg", 1: "pos"} and model.config.pad_token_id == 0


def cue_heavy(rows: list[dict]) -> list[dict]:
    """The toy rows with their cue word said five times more: a 2-layer random model, character-level tokens and a
    70-token prompt make one cue word too faint a signal to learn in a few steps."""
    return [{"text": " ".join([row["text"].split()[2]] * 5 + [row["text"]]), "label": row["label"]} for row in rows]


@pytest.fixture(scope="module")
def generate_run(tmp_path_factory, tiny_model_dir) -> RunDir:
    root = tmp_path_factory.mktemp("llm-generate")
    raw = llm_config(root, tiny_model_dir, classifier="generate", epochs=12, learning_rate=1e-2, batch_size=8)
    raw["data"]["train_file"] = str(write_csv(root / "cues.csv", cue_heavy(toy_rows(90))))
    raw["data"]["test_file"] = str(write_csv(root / "cues_test.csv", cue_heavy(toy_rows(30, offset=500))))
    result = invoke("run", str(write_config(root / "run.yaml", raw)))
    assert result.exit_code == 0, result.output
    return RunDir(root / "run")


def test_generated_label_beats_the_untuned_models_zero_shot_choice(generate_run):
    metrics = read_json(generate_run.metrics)
    assert metrics["baseline_kind"] == "untuned model's constrained choice (zero-shot)"
    assert set(metrics["tuned"]) == {"accuracy", "f1_macro", "f1_micro", "precision_macro", "recall_macro"}
    assert metrics["tuned"]["accuracy"] > metrics["baseline"]["accuracy"]
    assert metrics["tuned"]["accuracy"] > 100 * 20 / 30  # learned the cue words, not just the label prior
    assert metrics["classification"]["confusion_matrix"]["labels"] == ["neg", "pos"]
    assert set(metrics["classification"]["roc_curves"]) == {"neg", "pos"}
    samples = read_jsonl(generate_run.samples)
    assert len(samples) == 30 and all(s["tuned"] in ("neg", "pos") and s["baseline"] in ("neg", "pos")
                                      for s in samples)  # constrained: never anything but a label
    assert read_json(generate_run.model / "classifier_labels.json")["labels"] == ["neg", "pos"]
    assert read_json(generate_run.root / "train_summary.json")["classifier"] == "generate"
    result = invoke("chat", str(generate_run.root), "--prompt", "the movie was lovely")
    label, probability = result.output.strip().split(" (p=")
    assert label in ("neg", "pos") and 0.5 <= float(probability.rstrip(")")) <= 1


def test_label_scores_match_one_unpadded_forward_pass_per_label(tiny_model_dir):
    """Left padding, position ids and logits_to_keep must not change a label's log-likelihood."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tuneloop.data.classification_prompt import classification_messages
    from tuneloop.data.encode import render_prompt
    from tuneloop.evaluate.classification_generative import label_endings, label_log_likelihoods, label_probabilities

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts, labels = ["a day", "the service was really very quite lovely"], ["neg", "pos", "neutral_long_label"]
    scores = label_log_likelihoods(model, tokenizer, texts, labels, batch_size=4)
    endings = label_endings(tokenizer, labels)
    assert endings[0] == "neg<|im_end|>\n"  # the end-of-turn marker is scored too
    for row, text in enumerate(texts):
        prompt = render_prompt(tokenizer, classification_messages(text, labels, labels[0]))
        for column, ending in enumerate(endings):
            encoded = tokenizer(prompt + ending, add_special_tokens=False, return_offsets_mapping=True)
            ids = torch.tensor([encoded["input_ids"]])
            with torch.no_grad():
                log_probs = model(ids).logits[0, :-1].log_softmax(-1)
            expected = sum(log_probs[i - 1, ids[0, i]].item()
                           for i, (begin, _) in enumerate(encoded["offset_mapping"]) if begin >= len(prompt))
            assert scores[row, column] == pytest.approx(expected, abs=1e-4)
    probabilities = label_probabilities(model, tokenizer, texts, labels, batch_size=4)
    assert probabilities.sum(axis=1) == pytest.approx([1.0, 1.0])
    assert (probabilities.argmax(axis=1) == scores.argmax(axis=1)).all()


def test_long_texts_are_cut_but_the_label_is_kept(tiny_model_dir):
    from transformers import AutoTokenizer

    from tuneloop.data.classification_prompt import classification_messages, fit_texts
    from tuneloop.data.encode import IGNORE_INDEX, EncodeStats, encode_example

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    texts, cut = fit_texts(tokenizer, ["short", "word " * 200], ["neg", "pos"], max_length=128)
    assert cut == 1 and texts[0] == "short" and len(texts[1]) < len("word " * 200)
    stats = EncodeStats()
    encoded = encode_example(tokenizer, {"messages": classification_messages(texts[1], ["neg", "pos"], "pos")}, 128,
                             False, stats)
    learned = tokenizer.decode([t for t in encoded["labels"] if t != IGNORE_INDEX])
    assert stats.truncated == 0 and learned.startswith("pos")
    with pytest.raises(ConfigError, match="data.max_length=80: the prompt with the 2 label names"):
        fit_texts(tokenizer, ["x"], ["neg", "pos"], max_length=80)  # the tiny vocabulary spells the prompt out


def _prepared_run(tmp_path: Path, rows: list[dict], data_format: str = "classification") -> RunDir:
    run = RunDir(tmp_path / "run")
    write_jsonl(run.split("train"), rows)
    write_jsonl(run.split("validation"), rows[:2])
    write_json(run.data / "data_report.json", {"format": data_format})
    return run


def test_invalid_classifier_combinations_are_config_errors(tmp_path, tiny_model_dir):
    from transformers import BertConfig

    from tuneloop.stages import train_stage

    encoder = tmp_path / "encoder"
    BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
               intermediate_size=8).save_pretrained(encoder)
    raw = llm_config(tmp_path, encoder, classifier="generate")
    with pytest.raises(ConfigError, match="is an encoder"):
        train_stage(validate_config(raw), _prepared_run(tmp_path / "a", toy_rows(6)))

    multi = [{"text": "good day", "label": ["pos", "day"]}, {"text": "bad day", "label": ["neg"]}]
    raw = llm_config(tmp_path, tiny_model_dir, classifier="generate", class_weights=True)
    with pytest.raises(ConfigError, match="multi-label.*class_weights"):
        train_stage(validate_config(raw), _prepared_run(tmp_path / "b", multi))

    chat = [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}] * 3
    raw = llm_config(tmp_path, tiny_model_dir, classifier="head")
    with pytest.raises(ConfigError, match="applies to classification data"):
        train_stage(validate_config(raw), _prepared_run(tmp_path / "c", chat, "chat"))
    with pytest.raises(ConfigError, match="train.classifier"):
        validate_config(llm_config(tmp_path, tiny_model_dir, classifier="decoder"))
