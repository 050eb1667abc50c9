"""The seq2seq recipe end to end on a tiny random T5: summarization with LoRA, prompt-completion in full, resume."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch
from conftest import write_jsonl

from tuneloop.config.load import validate_config
from tuneloop.data.pairs import encode_pairs, source_and_target
from tuneloop.errors import DataError
from tuneloop.stages import run_all, train_stage
from tuneloop.workspace import RunDir, read_json

NAMES = ("Anna", "Ben", "Carl", "Dora", "Eve", "Finn")
COLOURS = ("red", "blue", "green")
ITEMS = ("bike", "lamp", "coat", "book")


def dialogue_rows(combos) -> list[dict]:
    """A shop dialogue whose one-line summary repeats who bought which item."""
    return [
        {"dialogue": f"#Person1#: Hello {name}, what do you need today?\n#Person2#: I want to buy a {colour} {item}."
                     f"\n#Person1#: Here is a {colour} {item}.\n#Person2#: Thank you.",
         "summary": f"{name} buys a {colour} {item}.",
         "topic": "shopping"}
        for name, colour, item in combos
    ]


ALL_COMBOS = list(itertools.product(NAMES, COLOURS, ITEMS))  # 72
TEST_COMBOS = ALL_COMBOS[5::8]  # 9 combinations training never shows
TRAIN_COMBOS = [combo for combo in ALL_COMBOS if combo not in TEST_COMBOS]


@pytest.fixture(scope="module")
def tiny_t5_dir(tmp_path_factory) -> Path:
    """A 2-layer T5 (d_model 32, random weights) with a byte-level BPE tokenizer trained here; no downloads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast, T5Config, T5ForConditionalGeneration

    target = tmp_path_factory.mktemp("tiny-t5")
    specials = ["<pad>", "</s>", "<unk>"]  # T5's order: pad 0 (also the decoder start), eos 1
    backend = Tokenizer(models.BPE(unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    corpus = [row["dialogue"] + " " + row["summary"] for row in dialogue_rows(ALL_COMBOS)]
    corpus += ["Summarize the following text in a few sentences. What is 2 plus 2? four five six seven"]
    backend.train_from_iterator(corpus * 2, trainers.BpeTrainer(
        vocab_size=300, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="</s>",
                                        unk_token="<unk>")
    tokenizer.save_pretrained(target)
    torch.manual_seed(0)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_decoder_layers=2,
                      num_heads=4, dropout_rate=0.0, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    T5ForConditionalGeneration(config).save_pretrained(target)
    return target


def seq2seq_config(root: Path, model_dir: Path, train_file: Path, test_file: Path, **train) -> dict:
    return {
        "output_dir": str(root / "run"),
        "model": {"name": str(model_dir), "dtype": "fp32", "device": "cpu"},
        "data": {"train_file": str(train_file), "test_file": str(test_file), "max_length": 64,
                 "audit": {"enabled": False}},
        # 63 rows would switch on the few-shot preset (5 cross-validation fits); its own tests cover it.
        "train": {"method": "lora", "preset": "none", "epochs": 30, "learning_rate": 1e-2, "batch_size": 16,
                  "eval_every": 20, "save_every": 20, "logging_steps": 5, "early_stopping_patience": None,
                  "lora": {"rank": 8, "alpha": 16, "dropout": 0.0}, **train},
        "evaluate": {"max_new_tokens": 16, "batch_size": 16},
        "tracking": {"backend": "none"},
    }


@pytest.fixture(scope="module")
def summary_run(tmp_path_factory, tiny_t5_dir) -> tuple[RunDir, list[str]]:
    root = tmp_path_factory.mktemp("seq2seq-summaries")
    train = write_jsonl(root / "train.jsonl", dialogue_rows(TRAIN_COMBOS))
    test = write_jsonl(root / "test.jsonl", dialogue_rows(TEST_COMBOS))
    printed: list[str] = []
    run, _ = run_all(validate_config(seq2seq_config(root, tiny_t5_dir, train, test)), console_print=printed.append)
    return run, printed


def test_summarization_with_lora_beats_the_untuned_model(summary_run):
    run, printed = summary_run
    assert any("lora seq2seq" in line for line in printed)
    assert read_json(run.data / "data_report.json")["format"] == "summarization"
    summary = read_json(run.root / "train_summary.json")
    assert summary["task"] == "seq2seq" and summary["steps"] > 0
    assert json.loads((run.adapter / "adapter_config.json").read_text())["task_type"] == "SEQ_2_SEQ_LM"
    assert run.last_checkpoint() is not None

    metrics = read_json(run.metrics)
    assert metrics["heldout"] == {"split": "test", "rows": len(TEST_COMBOS), "rows_with_answer": 0}
    for side in ("baseline", "tuned"):
        # Summarization runs are scored with ROUGE-1/2/L (and BLEU, chrF), not exact match.
        assert set(metrics[side]) == {"validation_loss", "perplexity", "validation_tokens",
                                      "rouge_1", "rouge_2", "rouge_l", "bleu", "chrf"}
    assert metrics["tuned"]["validation_loss"] < metrics["baseline"]["validation_loss"] - 1.0
    assert metrics["tuned"]["rouge_l"] > metrics["baseline"]["rouge_l"] + 20
    assert metrics["comparison"]["rouge_2"]["test"] == "paired bootstrap"


def test_summary_lengths_are_measured_and_reported(summary_run):
    run, _ = summary_run
    lengths = read_json(run.metrics)["lengths"]
    assert list(lengths) == ["reference", "baseline", "tuned"]
    assert lengths["reference"] == {"mean_words": 5.0, "median_words": 5.0}  # "Anna buys a red bike."
    samples = [json.loads(line) for line in run.samples.read_text().splitlines()]
    tuned_words = [len(sample["tuned"].split()) for sample in samples]
    assert lengths["tuned"]["mean_words"] == pytest.approx(sum(tuned_words) / len(tuned_words))
    assert lengths["tuned"]["ratio_to_reference"] == pytest.approx(lengths["tuned"]["mean_words"] / 5.0)
    assert samples[0]["prompt"][0]["content"].startswith("Summarize the following text")
    report = (run.root / "report.html").read_text()
    assert "Summary lengths" in report and "rouge_l" in report


def test_chat_with_the_tuned_encoder_decoder_reads_the_request_as_its_source(summary_run):
    from tuneloop.chat import load_chat_model, reply
    from tuneloop.config.load import load_run_config

    run, _ = summary_run
    model, tokenizer = load_chat_model(load_run_config(run), run)
    request = dialogue_rows([("Eve", "green", "coat")])[0]["dialogue"]
    answer = reply(model, tokenizer, [{"role": "user", "content": f"Summarize the following text in a few "
                                                                  f"sentences.\n\n{request}"}], max_new_tokens=16)
    assert "buys a" in answer


def test_full_fine_tune_on_prompt_completion_resumes_from_its_checkpoint(tmp_path, tiny_t5_dir):
    rows = [{"prompt": f"What is {a} plus {b}?", "completion": str(a + b)} for a in range(6) for b in range(6)]
    train = write_jsonl(tmp_path / "train.jsonl", rows[:30])
    test = write_jsonl(tmp_path / "test.jsonl", rows[30:])
    config = validate_config(seq2seq_config(tmp_path, tiny_t5_dir, train, test, method="full", max_steps=6,
                                            eval_every=3, save_every=3))
    run, _ = run_all(config)
    assert (run.model / "config.json").is_file() and not run.adapter.exists()
    metrics = read_json(run.metrics)
    assert {"exact_match", "contains_answer", "token_f1"} <= set(metrics["tuned"])  # the non-summary defaults
    assert "lengths" not in metrics and metrics["baseline"]["validation_loss"] > 0

    # As after a crash between the last checkpoint and the save: the recipe picks up from checkpoint-6.
    (run.root / "train_summary.json").unlink()
    for path in run.model.iterdir():
        path.unlink()
    run.model.rmdir()
    printed: list[str] = []
    summary = train_stage(config, run, resume=True, console_print=printed.append)
    assert any("resuming from checkpoint-6" in line for line in printed)
    assert summary["steps"] == 6 and (run.model / "config.json").is_file()


def test_pairs_count_truncation_on_each_side_and_keep_the_closing_eos(tiny_t5_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_t5_dir)
    examples = [
        {"messages": [{"role": "user", "content": "Anna buys a red bike. " * 10},
                      {"role": "assistant", "content": "Anna buys a bike."}]},
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
                      {"role": "assistant", "content": "Ben buys a blue lamp. " * 10}]},
    ]
    encoded, stats = encode_pairs(tokenizer, examples, max_length=24)
    assert (stats.examples, stats.truncated_sources, stats.truncated_targets) == (2, 1, 1)
    for item in encoded:
        assert len(item["input_ids"]) <= 24 and len(item["labels"]) <= 24
        assert item["input_ids"][-1] == tokenizer.eos_token_id and item["labels"][-1] == tokenizer.eos_token_id
    assert source_and_target(examples[1])[0] == "system: Be brief.\nuser: Hello"
    with pytest.raises(DataError, match="plain text with no reply"):
        source_and_target({"text": "Once upon a time."})
