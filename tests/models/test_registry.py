"""Resolving what model.name says into something from_pretrained loads, without touching the network."""

from __future__ import annotations

import pytest

from tuneloop.errors import ModelError
from tuneloop.models.registry import REGISTRY, pull, resolve_model


def test_a_local_hf_directory_is_used_as_is(tiny_model_dir):
    assert resolve_model(str(tiny_model_dir)) == str(tiny_model_dir)


def test_a_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelError, match="without config.json"):
        resolve_model(str(tmp_path))


def test_a_missing_gguf_file_is_named(tmp_path):
    with pytest.raises(ModelError, match="no such GGUF file"):
        resolve_model(str(tmp_path / "model.gguf"))


def test_a_missing_local_path_is_not_mistaken_for_a_hub_id(tmp_path):
    with pytest.raises(ModelError, match="not a model directory"):
        resolve_model("./models/mine")


def test_anything_else_is_passed_on_as_a_hub_id():
    assert resolve_model("HuggingFaceTB/SmolLM2-135M-Instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"


def test_pulling_an_unknown_name_lists_the_defaults():
    with pytest.raises(ModelError, match="smollm2-135m-instruct, gemma3-270m, minilm-l6"):
        pull("llama-900b")


def test_registry_describes_each_default():
    assert {spec.task for spec in REGISTRY.values()} == {"causal-lm", "encoder"}
    assert REGISTRY["smollm2-135m-instruct"].chat_template and not REGISTRY["gemma3-270m"].chat_template
