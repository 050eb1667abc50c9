"""The token-classification (NER) recipe end to end on a tiny random BERT: align, train, evaluate, report, resume."""

from __future__ import annotations

import itertools
import json
import random
import shutil
from pathlib import Path

import pytest
import torch
from conftest import write_config
from typer.testing import CliRunner

from tuneloop.cli import app
from tuneloop.config.load import validate_config
from tuneloop.data.labels import check_known_types
from tuneloop.errors import ConfigError, TuneloopError
from tuneloop.recipes.token_classify import (
    IGNORED,
    aligned_labels,
    encode_words,
    load_word_tokenizer,
    tag_set,
    token_loss,
)
from tuneloop.workspace import RunDir, read_json, read_jsonl

runner = CliRunner()
SYLLABLES = ["ka", "lo", "mir", "ta", "ven", "su", "dor", "pi", "len", "ro", "bas", "ni"]
NAME_WORDS = [(a + b).capitalize() for a, b in itertools.product(SYLLABLES, repeat=2)]


def made_up_names(count: int, start: int) -> list[str]:
    """Nonsense names, every other one two words long. People, places and organisations share the words, so
    only the context tells the type: a word's most frequent training tag (the baseline) is often wrong."""
    return [NAME_WORDS[(i * 5) % len(NAME_WORDS)] + (f" {NAME_WORDS[(i * 7 + 3) % len(NAME_WORDS)]}" if i % 2 else "")
            for i in range(start, start + count)]


PEOPLE, PLACES, ORGS = made_up_names(60, 0), made_up_names(60, 20), made_up_names(40, 50)
TEMPLATES = [
    "{PER} lives in {LOC} .",
    "{PER} works for {ORG} in {LOC} .",
    "yesterday {PER} visited {LOC} .",
    "{ORG} hired {PER} .",
    "the weather was fine today .",
]
FILLER_WORDS = "lives in works for yesterday visited hired the weather was fine today ."


def tagged(template: str, names: dict[str, str]) -> dict:
    tokens, tags = [], []
    for word in template.split():
        if word.startswith("{"):
            kind = word.strip("{}")
            parts = names[kind].split()
            tokens += parts
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(parts) - 1)
        else:
            tokens.append(word)
            tags.append("O")
    return {"tokens": tokens, "tags": tags}


def sentences(count: int, seed: int) -> list[dict]:
    """Templates filled with names drawn at random (seeded) from the shared pools."""
    rng = random.Random(seed)
    return [tagged(TEMPLATES[i % len(TEMPLATES)], {"PER": rng.choice(PEOPLE), "LOC": rng.choice(PLACES),
                                                   "ORG": rng.choice(ORGS)})
            for i in range(count)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_conll(path: Path, rows: list[dict]) -> Path:
    blocks = ["\n".join(f"{word} X {tag}" for word, tag in zip(row["tokens"], row["tags"], strict=True))
              for row in rows]
    path.write_text("-DOCSTART- X O\n\n" + "\n\n".join(blocks) + "\n", encoding="utf-8")
    return path


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    if isinstance(result.exception, TuneloopError):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory) -> Path:
    """A 2-layer BERT (hidden 32, random weights) with a WordPiece tokenizer small enough to split names."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertForTokenClassification, PreTrainedTokenizerFast

    target = tmp_path_factory.mktemp("tiny-bert-ner")
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    backend = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    words = " ".join([FILLER_WORDS] * 20 + NAME_WORDS)
    backend.train_from_iterator([words], trainers.WordPieceTrainer(vocab_size=250, special_tokens=specials))
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    tokenizer.save_pretrained(target)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=4, max_position_embeddings=64, pad_token_id=0)
    BertForTokenClassification(config).save_pretrained(target)  # the head is replaced by the recipe
    return target


def ner_config(root: Path, model_dir: Path, **train) -> dict:
    return {
        "output_dir": str(root / "run"),
        "model": {"name": str(model_dir), "dtype": "fp32", "device": "cpu"},
        "data": {"train_file": str(write_jsonl(root / "train.jsonl", sentences(150, seed=0))),
                 "test_file": str(write_conll(root / "test.conll", sentences(40, seed=1))),
                 "max_length": 32},
        "train": {"method": "full", "epochs": 15, "learning_rate": 1e-2, "batch_size": 16, "eval_every": 20,
                  "save_every": 20, "logging_steps": 5, "early_stopping_patience": None, **train},
        "evaluate": {"batch_size": 16},
        "tracking": {"backend": "none"},
    }


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, tiny_bert_dir) -> RunDir:
    root = tmp_path_factory.mktemp("ner-full")
    result = invoke("run", str(write_config(root / "run.yaml", ner_config(root, tiny_bert_dir))))
    assert result.exit_code == 0, result.output
    return RunDir(root / "run")


def test_first_sub_word_of_each_word_carries_its_tag(tiny_bert_dir):
    tokenizer = load_word_tokenizer(str(tiny_bert_dir))
    words, tags = ["Kalomir", "Kaven", "visited", "Lomir"], ["B-PER", "I-PER", "O", "B-LOC"]
    tag_ids = {tag: i for i, tag in enumerate(tag_set([{"tags": tags}]))}
    encoded, truncation = encode_words(tokenizer, [{"tokens": words, "tags": tags}], tag_ids, max_length=32)
    word_ids = tokenizer(words, is_split_into_words=True).word_ids()
    assert word_ids.count(0) > 1, "the test needs a word split into several sub-words"
    labels = encoded["labels"][0]
    expected = []
    for position, word in enumerate(word_ids):
        first = word is not None and (position == 0 or word_ids[position - 1] != word)
        expected.append(tag_ids[tags[word]] if first else IGNORED)
    assert labels == expected
    assert labels[0] == IGNORED and labels[-1] == IGNORED  # [CLS] and [SEP]
    assert [label for label in labels if label != IGNORED] == [tag_ids[tag] for tag in tags]
    assert truncation.cut_sentences == 0
    assert aligned_labels([None, 0, 0, 1, None], [5, 7]) == [IGNORED, 5, IGNORED, 7, IGNORED]


def test_truncation_is_counted_per_sentence_and_word(tiny_bert_dir):
    tokenizer = load_word_tokenizer(str(tiny_bert_dir))
    rows = [{"tokens": ["the", "weather", "was", "fine", "today", "."], "tags": ["O"] * 6},
            {"tokens": ["fine"], "tags": ["O"]}]
    _, truncation = encode_words(tokenizer, rows, {"O": 0}, max_length=5)  # [CLS] + 3 words + [SEP]
    assert (truncation.sentences, truncation.cut_sentences, truncation.cut_words) == (2, 1, 3)


def test_tag_set_has_both_prefixes_of_every_type_and_unseen_types_are_an_error():
    assert tag_set([{"tags": ["B-PER", "O", "B-LOC", "I-LOC"]}]) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    with pytest.raises(TuneloopError, match=r"'ORG' \(2 entities\)"):
        check_known_types([{"tags": ["B-ORG", "B-ORG"]}], ["O", "B-PER", "I-PER"], "validation")


def test_token_loss_ignores_unlabelled_sub_words_and_divides_by_the_whole_batch():
    class Outputs:
        logits = torch.tensor([[[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]]])

    labels = torch.tensor([[0, IGNORED, 1]])
    expected = torch.nn.functional.cross_entropy(torch.tensor([[2.0, 0.0], [1.0, 1.0]]), torch.tensor([0, 1]))
    assert token_loss(Outputs, labels).item() == pytest.approx(expected.item())
    # Under gradient accumulation the Trainer passes the labelled count of all micro-batches together.
    assert token_loss(Outputs, labels, num_items_in_batch=4).item() == pytest.approx(expected.item() / 2)


def test_run_beats_the_word_lexicon_baseline(full_run):
    metrics = read_json(full_run.metrics)
    assert metrics["task"] == "token classification" and metrics["status"] == "passed"
    assert metrics["heldout"] == {"split": "test", "rows": 40, "rows_with_answer": 0}
    assert metrics["baseline_kind"].startswith("most frequent training tag per word")
    for side in ("baseline", "tuned", "delta"):
        assert set(metrics[side]) == {"entity_f1", "entity_precision", "entity_recall", "entity_f1_macro",
                                      "token_accuracy"}
    # Names carry every type in training, so the word lexicon is often wrong; the tagger reads the context.
    assert 0.0 < metrics["baseline"]["entity_f1"] < 70.0, metrics["baseline"]
    assert metrics["tuned"]["entity_f1"] > metrics["baseline"]["entity_f1"] + 20, metrics["tuned"]
    assert metrics["comparison"]["entity_f1"]["significant"]
    low, high = metrics["intervals"]["tuned"]["entity_f1"]
    assert low <= metrics["tuned"]["entity_f1"] <= high
    details = metrics["token_classification"]
    assert set(details["per_type"]["tuned"]) == {"LOC", "ORG", "PER"}
    assert details["words_predicted_o_after_truncation"] == 0


def test_samples_report_and_model_config_carry_words_and_tag_names(full_run):
    samples = read_jsonl(full_run.samples)
    test_rows = read_jsonl(full_run.split("test"))
    assert len(samples) == len(test_rows) == 40
    first = samples[0]
    assert first["tokens"] == test_rows[0]["tokens"] and first["tags"] == test_rows[0]["tags"]
    assert len(first["tuned_tags"]) == len(first["tokens"]) == len(first["baseline_tags"])
    assert first["prompt"][0]["content"] == " ".join(first["tokens"])
    assert "(PER)" in first["reference"] and first["baseline"].endswith(")")
    html = (full_run.root / "report.html").read_text()
    assert "Entities by type" in html and "entity_f1: " in html
    (full_run.root / "report.html").unlink()
    assert invoke("report", str(full_run.root)).exit_code == 0
    assert "Entities by type" in (full_run.root / "report.html").read_text()
    saved = json.loads((full_run.model / "config.json").read_text())
    assert saved["id2label"] == {"0": "O", "1": "B-LOC", "2": "I-LOC", "3": "B-ORG", "4": "I-ORG", "5": "B-PER",
                                 "6": "I-PER"}
    assert read_json(full_run.root / "train_summary.json")["entity_types"] == ["LOC", "ORG", "PER"]
    audit = read_json(full_run.root / "audit" / "audit.json")
    assert set(audit["labels"]["distribution"]) == {"LOC", "ORG", "PER"}


def test_chat_tags_the_words_of_a_prompt(full_run):
    result = invoke("chat", str(full_run.root), "--prompt", "Lenlen lives in Kalomir .")
    assert result.exit_code == 0, result.output
    tagged_words = result.output.strip().splitlines()[0].split()
    assert [item.rsplit("/", 1)[0] for item in tagged_words] == ["Lenlen", "lives", "in", "Kalomir", "."]
    assert all(item.rsplit("/", 1)[1] in {"O", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-PER", "I-PER"}
               for item in tagged_words)


def test_lora_trains_the_head_resumes_and_evaluates(tmp_path, tiny_bert_dir):
    from tuneloop.stages import data_stage, evaluate_stage, open_for_run, train_stage

    raw = ner_config(tmp_path, tiny_bert_dir, method="lora", max_steps=4, eval_every=2, save_every=2,
                     lora={"rank": 4, "alpha": 8, "dropout": 0.0})
    config = validate_config(raw)
    run = open_for_run(config)
    data_stage(config, run, console_print=lambda message: None)
    first = train_stage(config, run, console_print=lambda message: None)
    assert first["steps"] == 4 and (run.adapter / "adapter_config.json").is_file()
    assert "classifier" in json.loads((run.adapter / "adapter_config.json").read_text())["modules_to_save"]
    # As if stopped after step 2: a resume must continue from checkpoint-2 and train steps 3 and 4 only.
    (run.root / "train_summary.json").unlink()
    shutil.rmtree(run.checkpoints / "checkpoint-4")
    shutil.rmtree(run.adapter)
    messages: list[str] = []
    resumed = train_stage(config, run, resume=True, console_print=messages.append)
    assert any("resuming from checkpoint-2" in message for message in messages) and resumed["steps"] == 4
    assert [record["step"] for record in read_jsonl(run.train_log) if "eval_loss" in record] == [2, 4]
    results = evaluate_stage(config, run, console_print=lambda message: None)
    assert set(results["token_classification"]["per_type"]["tuned"]) <= {"LOC", "ORG", "PER"}
    assert 0.0 <= results["tuned"]["token_accuracy"] <= 100.0
    from transformers import AutoModelForTokenClassification

    assert invoke("export", str(run.root), "--out", str(tmp_path / "merged"), "--merge").exit_code == 0
    merged = AutoModelForTokenClassification.from_pretrained(tmp_path / "merged")
    assert merged.config.id2label[5] == "B-PER" and merged.config.num_labels == 7


def test_class_weights_are_refused_for_tagging(tmp_path, tiny_bert_dir):
    from tuneloop.stages import data_stage, open_for_run, train_stage

    config = validate_config(ner_config(tmp_path, tiny_bert_dir, class_weights=True))
    run = open_for_run(config)
    data_stage(config, run, console_print=lambda message: None)
    with pytest.raises(ConfigError, match="train.class_weights"):
        train_stage(config, run, console_print=lambda message: None)
