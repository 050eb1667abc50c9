"""The classification recipe end to end on a tiny random BERT: train, evaluate against the majority class, export."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pytest
import torch
from conftest import write_config
from typer.testing import CliRunner

from tuneloop.cli import app
from tuneloop.data.labels import check_known_labels
from tuneloop.errors import TuneloopError
from tuneloop.recipes.classify import class_weights, weighted_loss
from tuneloop.workspace import RunDir, read_json

runner = CliRunner()
POSITIVE, NEGATIVE = ("good", "great", "lovely"), ("bad", "awful", "poor")
FILLER = ("the", "movie", "was", "really", "food", "service", "a", "day", "very", "quite")


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    if isinstance(result.exception, TuneloopError):
        raise result.exception
    return result


def toy_rows(count: int, offset: int = 0) -> list[dict]:
    """Texts whose label is decided by one cue word; two positives for every negative, so majority is 'pos'."""
    fillers = list(itertools.permutations(FILLER, 3))
    rows = []
    for i in range(offset, offset + count):
        label = "neg" if i % 3 == 0 else "pos"
        cue = (NEGATIVE if label == "neg" else POSITIVE)[i % 3 if label == "pos" else (i // 3) % 3]
        first, second, third = fillers[(i * 7) % len(fillers)]
        rows.append({"text": f"{first} {second} {cue} {third}", "label": label})
    return rows


def write_csv(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, ["text", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT (hidden 32, random weights) with a WordPiece tokenizer trained on the toy words."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    target = tmp_path_factory.mktemp("tiny-bert")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.train_from_iterator([" ".join(FILLER + POSITIVE + NEGATIVE)] * 4,
                                trainers.WordPieceTrainer(vocab_size=200, special_tokens=specials))
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    tokenizer.save_pretrained(target)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=64, pad_token_id=0)
    BertForSequenceClassification(config).save_pretrained(target)  # the head is replaced by the recipe
    return target


def classify_config(root: Path, model_dir: Path, **train) -> dict:
    return {
        "output_dir": str(root / "run"),
        "model": {"name": str(model_dir), "dtype": "fp32", "device": "cpu"},
        "data": {"train_file": str(write_csv(root / "train.csv", toy_rows(90))),
                 "test_file": str(write_csv(root / "test.csv", toy_rows(30, offset=500))), "max_length": 16},
        "train": {"method": "full", "preset": "none", "epochs": 8, "learning_rate": 3e-3, "batch_size": 16,
                  "eval_every": 10, "save_every": 10, "logging_steps": 5, "early_stopping_patience": None, **train},
        "evaluate": {"batch_size": 16},
        "tracking": {"backend": "none"},
    }


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_bert_dir) -> RunDir:
    root = tmp_path_factory.mktemp("classify-full")
    result = invoke("run", str(write_config(root / "run.yaml", classify_config(root, tiny_bert_dir))))
    assert result.exit_code == 0, result.output
    return RunDir(root / "run")


def test_run_beats_the_majority_class_and_writes_classification_metrics(full_run):
    metrics = read_json(full_run.metrics)
    assert metrics["baseline_kind"] == "majority class" and metrics["status"] == "passed"
    assert metrics["heldout"]["split"] == "test" and metrics["heldout"]["rows"] == 30
    for side in ("baseline", "tuned", "delta"):
        assert set(metrics[side]) == {"accuracy", "f1_macro", "f1_micro", "precision_macro", "recall_macro"}
    assert metrics["baseline"]["accuracy"] == pytest.approx(100 * 20 / 30)  # always "pos"
    assert metrics["tuned"]["accuracy"] > metrics["baseline"]["accuracy"]
    assert metrics["comparison"]["accuracy"]["test"] == "mcnemar"
    assert len(metrics["intervals"]["tuned"]["accuracy"]) == 2
    details = metrics["classification"]
    assert details["confusion_matrix"]["labels"] == ["neg", "pos"]
    assert set(details["roc_curves"]) == {"neg", "pos"} and 0 <= details["roc_auc_macro"] <= 1
    sample = json.loads(full_run.samples.read_text().splitlines()[0])
    assert sample["baseline"] == "pos" and sample["tuned"] in ("neg", "pos") and sample["prompt"][0]["role"] == "user"
    assert (full_run.root / "audit" / "audit.json").is_file()
    assert "alt='confusion matrix'" in (full_run.root / "report.html").read_text()
    assert read_json(full_run.root / "train_summary.json")["labels"] == 2


def test_exported_model_keeps_the_label_names(full_run, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "export"
    assert invoke("export", str(full_run.root), "--out", str(out)).exit_code == 0
    assert AutoModelForSequenceClassification.from_pretrained(out).config.id2label == {0: "neg", 1: "pos"}


def test_chat_prints_the_predicted_label_with_its_probability(full_run):
    result = invoke("chat", str(full_run.root), "--prompt", "the food was awful")
    assert result.exit_code == 0, result.output
    label, probability = result.output.strip().split(" (p=")
    assert label in ("neg", "pos") and 0 <= float(probability.rstrip(")")) <= 1
    with pytest.raises(TuneloopError, match="classification run"):
        invoke("chat", str(full_run.root))


def test_a_test_label_unseen_in_training_is_a_clear_error(full_run, tmp_path):
    extra = write_csv(tmp_path / "extra.csv", [{"text": "the day was good", "label": "neutral"}])
    with pytest.raises(TuneloopError, match="'neutral' \\(1 row"):
        invoke("evaluate", str(full_run.root), "--data", str(extra))
    with pytest.raises(TuneloopError, match="never shows"):
        check_known_labels([{"text": "x", "label": ["pos", "meh"]}], ["neg", "pos"], "validation")


def test_class_weights_are_inverse_frequency_and_change_the_loss():
    rows = [{"label": "pos"}] * 3 + [{"label": "neg"}]
    weights = class_weights(rows, ["neg", "pos"], multi_label=False)
    assert weights == pytest.approx([2.0, 2 / 3])  # n / (classes * count)
    multi = [{"label": ["a", "b"]}, {"label": ["a"]}, {"label": ["a"]}, {"label": ["b"]}]
    assert class_weights(multi, ["a", "b"], multi_label=True) == pytest.approx([1 / 3, 1.0])  # negatives / positives

    class Outputs:
        logits = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-1.0, 1.0]])

    labels = torch.tensor([1, 0, 1])
    plain = torch.nn.functional.cross_entropy(Outputs.logits, labels)
    assert weighted_loss([1.0, 1.0], multi_label=False)(Outputs, labels) == pytest.approx(plain.item())
    assert weighted_loss(weights, multi_label=False)(Outputs, labels) != pytest.approx(plain.item())


def test_lora_trains_the_head_and_evaluates(tmp_path, tiny_bert_dir):
    from tuneloop.models.load import load_tuned_classifier

    raw = classify_config(tmp_path, tiny_bert_dir, method="lora", max_steps=6, eval_every=3, save_every=3,
                          class_weights=True, lora={"rank": 4, "alpha": 8, "dropout": 0.0})
    result = invoke("run", str(write_config(tmp_path / "run.yaml", raw)))
    assert result.exit_code == 0, result.output
    run = RunDir(tmp_path / "run")
    assert (run.adapter / "adapter_config.json").is_file()
    assert "classifier" in json.loads((run.adapter / "adapter_config.json").read_text())["modules_to_save"]
    assert set(read_json(run.metrics)["tuned"]) >= {"accuracy", "f1_macro"}
    model, _ = load_tuned_classifier(run, str(tiny_bert_dir), torch.float32, "cpu")
    assert model.config.id2label == {0: "neg", 1: "pos"}


def test_multi_label_rows_train_with_a_sigmoid_per_label(tmp_path, tiny_bert_dir):
    rows = [{"text": row["text"], "label": [row["label"]] + (["food"] if "food" in row["text"] else [])}
            for row in toy_rows(60)]
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    raw = classify_config(tmp_path, tiny_bert_dir, max_steps=4, eval_every=2, save_every=2)
    raw["data"] = {"train_file": str(train), "test_size": 0.2, "max_length": 16}
    result = invoke("run", str(write_config(tmp_path / "run.yaml", raw)))
    assert result.exit_code == 0, result.output
    metrics = read_json(RunDir(tmp_path / "run").metrics)
    assert metrics["task"] == "multi-label classification" and metrics["baseline_kind"] == "majority label set"
    assert {"accuracy", "hamming_loss", "f1_micro"} <= set(metrics["tuned"])
    assert set(metrics["classification"]["per_class"]) == {"food", "neg", "pos"}


def test_classification_settings_do_not_apply_to_preference_data(tmp_path, tiny_bert_dir):
    from tuneloop.config.load import validate_config
    from tuneloop.errors import ConfigError
    from tuneloop.stages import train_stage
    from tuneloop.workspace import write_json

    run = RunDir(tmp_path / "run")
    write_json(run.data / "data_report.json", {"format": "preference"})
    raw = classify_config(tmp_path, tiny_bert_dir)
    raw["train"]["recipe"] = "sft"
    with pytest.raises(ConfigError, match="train.recipe='sft' trains on .*preference format"):
        train_stage(validate_config(raw), run)
