"""Shared fixtures: a tiny random Llama with a real (trained-here) tokenizer, and small chat datasets."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # unit tests must never reach for a hub

# CPU and fp32 by default for repeatable numbers; TUNELOOP_TEST_DEVICE=cuda runs the same tests on a GPU (bf16).
TEST_DEVICE = os.environ.get("TUNELOOP_TEST_DEVICE", "cpu")

FACTS = [
    ("When do the Larkspur stores open?", "They open at 7:30 every day.", "7:30"),
    ("How long is the warranty?", "The warranty lasts 7 years.", "7 years"),
    ("Where is the head office?", "The head office is in Bergen.", "Bergen"),
    ("What does a tune-up cost?", "A tune-up costs $65.", "$65"),
    ("Which day are shops closed?", "Shops are closed on Wednesday.", "Wednesday"),
    ("How far does the e-bike go?", "The e-bike goes 140 km on one charge.", "140 km"),
]


def chat_row(question: str, reply: str, answer: str | None = None) -> dict:
    row = {"messages": [
        {"role": "system", "content": "You help customers."},
        {"role": "user", "content": question},
        {"role": "assistant", "content": reply},
    ]}
    if answer:
        row["answer"] = answer
    return row


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer Llama (random weights) with a byte-level BPE tokenizer and a ChatML template."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from tuneloop.data.templates import CHATML

    target = tmp_path_factory.mktemp("tiny-llama")
    specials = ["<pad>", "<|im_start|>", "<|im_end|>"]
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    corpus = [f"{q} {a} system user assistant You help customers." for q, a, _ in FACTS] * 4
    backend.train_from_iterator(
        corpus,
        trainers.BpeTrainer(
            vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        ),
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="<pad>", eos_token="<|im_end|>", bos_token=None
    )
    tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(target)

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    LlamaForCausalLM(config).save_pretrained(target)
    return target


@pytest.fixture()
def tiny_data(tmp_path) -> dict[str, Path]:
    """Train rows (each fact four times, so validation and train share facts) and paraphrased test rows."""
    train = [chat_row(q, a, key) for q, a, key in FACTS] * 4
    test = [chat_row("Tell me: " + q.lower(), a, key) for q, a, key in FACTS]
    return {"train": write_jsonl(tmp_path / "train.jsonl", train), "test": write_jsonl(tmp_path / "test.jsonl", test)}


@pytest.fixture()
def tiny_config(tmp_path, tiny_model_dir, tiny_data) -> dict:
    """A raw config dict for a fast run on the tiny model."""
    return {
        "output_dir": str(tmp_path / "run"),
        "model": {"name": str(tiny_model_dir), "dtype": "fp32" if TEST_DEVICE == "cpu" else "auto",
                  "device": TEST_DEVICE},
        "data": {"train_file": str(tiny_data["train"]), "test_file": str(tiny_data["test"]), "max_length": 64},
        "train": {
            "method": "lora",
            "preset": "none",  # 24 rows would switch on the few-shot preset; tests of it opt in
            "epochs": 6,
            "learning_rate": 1e-2,
            "batch_size": 4,
            "eval_every": 10,
            "save_every": 10,
            "logging_steps": 1,
            "lora": {"rank": 8, "alpha": 32, "dropout": 0.0},
        },
        "evaluate": {"max_new_tokens": 8, "batch_size": 4},
        "tracking": {"backend": "none"},  # one test covers MLflow; the rest stay quick
    }


def write_config(path: Path, raw: dict) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def postgres_server():
    """A real PostgreSQL server on a free loopback port for the whole session (see tests/postgres_server.py).

    Installed with apt-get when missing and running as root (as CI does); elsewhere the tests that use it
    skip with the command that installs it.
    """
    server = postgres_or_skip()
    yield server
    server.stop()


def postgres_or_skip():
    """A started throwaway PostgreSQL cluster (the caller stops it), or a skip that says why there is none."""
    from postgres_server import PostgresUnavailable, start_postgres

    try:
        return start_postgres()
    except PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL unavailable: {exc}")


@pytest.fixture()
def postgres_url(postgres_server) -> str:
    """A fresh, empty PostgreSQL database for one test, as a SQLAlchemy URL (postgresql+psycopg://...)."""
    return postgres_server.create_database()


# Preference tuning: a careful, correct reply preferred over a curt one (tests of recipes/dpo.py, kto.py, reward.py).
CURT = ("No idea.", "Ask someone else.", "Go away.", "Not my problem.", "Whatever.", "Figure it out.")


def preference_pairs(repeat: int = 4) -> list[dict]:
    return [{"prompt": question if copy % 2 == 0 else f"Please tell me: {question}", "chosen": answer,
             "rejected": CURT[(index + copy) % len(CURT)]}
            for copy in range(repeat) for index, (question, answer, _) in enumerate(FACTS)]


@pytest.fixture(scope="session")
def pair_files(tmp_path_factory) -> dict[str, Path]:
    """Training pairs and paraphrased held-out pairs (no prompt shared with training)."""
    directory = tmp_path_factory.mktemp("pairs")
    test = [{"prompt": f"Tell me, {q.lower()}", "chosen": a, "rejected": CURT[i]} for i, (q, a, _) in enumerate(FACTS)]
    return {"train": write_jsonl(directory / "pairs.jsonl", preference_pairs()),
            "test": write_jsonl(directory / "pairs_test.jsonl", test)}


def preference_run_config(output_dir: Path, model_dir: Path, files: dict[str, Path], recipe: str, **train) -> dict:
    """A raw config for a few steps of a preference recipe on the tiny Llama (CPU, fp32)."""
    return {
        "output_dir": str(output_dir),
        "model": {"name": str(model_dir), "dtype": "fp32", "device": "cpu"},
        "data": {"train_file": str(files["train"]), "test_file": str(files["test"]), "max_length": 48,
                 "audit": {"checks": ["duplicates", "leakage", "preference"]}},
        "train": {"recipe": recipe, "method": "lora", "preset": "none", "epochs": 1, "max_steps": 6, "batch_size": 4,
                  "learning_rate": 5e-3, "eval_every": 3, "save_every": 3, "early_stopping_patience": None,
                  "logging_steps": 1, "lora": {"rank": 8, "alpha": 16}, **train},
        "evaluate": {"max_new_tokens": 4, "batch_size": 8, "max_samples": 6},
        "tracking": {"backend": "none"},
    }


@pytest.fixture(scope="session")
def tiny_reward_run(tmp_path_factory, tiny_model_dir, pair_files) -> Path:
    """A reward run on the tiny Llama (score head + LoRA, a few steps), trained and evaluated once: its directory."""
    from tuneloop.config.load import validate_config
    from tuneloop.stages import run_all

    root = tmp_path_factory.mktemp("reward") / "run"
    raw = preference_run_config(root, tiny_model_dir, pair_files, "reward", max_steps=8, learning_rate=1e-2)
    run_all(validate_config(raw), evaluate=True, console_print=lambda *_: None)
    return root


@pytest.fixture(scope="session")
def adapter_runs(tiny_model_dir, tmp_path_factory) -> dict[str, Path]:
    """Two LoRA runs on the same tiny base, 'alpha' and 'beta', with different random adapter weights (serve tests).

    Here rather than in tests/serve/conftest.py: a second module named conftest would shadow this one for the
    `from conftest import ...` lines of the other tests.
    """
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "serve"))
    from serve_helpers import PROMPTS, make_adapter_run

    root = tmp_path_factory.mktemp("runs")
    return {"alpha": make_adapter_run(root / "alpha", tiny_model_dir, 1, PROMPTS),
            "beta": make_adapter_run(root / "beta", tiny_model_dir, 2, PROMPTS)}
