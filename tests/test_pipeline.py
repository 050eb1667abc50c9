"""End to end on a tiny random model through the CLI: run, evaluate, chat, export, interrupt and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import FACTS, write_config, write_jsonl
from typer.testing import CliRunner

from tuneloop.cli import app
from tuneloop.workspace import RunDir, read_json, sha256_file

runner = CliRunner()


def invoke(*args: str):
    from tuneloop.errors import TuneloopError

    result = runner.invoke(app, list(args))
    if isinstance(result.exception, TuneloopError):
        raise result.exception
    return result


@pytest.fixture()
def finished_run(tmp_path, tiny_config):
    config = write_config(tmp_path / "run.yaml", tiny_config)
    result = invoke("run", str(config))
    assert result.exit_code == 0, result.output
    return RunDir(tmp_path / "run"), config, result


def test_run_writes_manifest_metrics_and_adapter(finished_run, tiny_data):
    run, _, result = finished_run
    manifest = read_json(run.manifest)
    assert manifest["data_files"]["train"]["sha256"] == sha256_file(tiny_data["train"])
    assert manifest["seed"] == 42 and manifest["packages"]["transformers"]
    metrics = read_json(run.metrics)
    assert set(metrics) >= {"baseline", "tuned", "delta", "heldout"}
    assert metrics["heldout"] == {"split": "test", "rows": 6, "rows_with_answer": 6}
    for side in ("baseline", "tuned"):
        expected = {"validation_loss", "perplexity", "exact_match", "contains_answer", "rouge_l", "bleu"}
        assert set(metrics[side]) >= expected
    # Six epochs at a high learning rate must move validation loss well below the random model's.
    assert metrics["tuned"]["validation_loss"] < metrics["baseline"]["validation_loss"] - 0.3
    assert (run.adapter / "adapter_config.json").is_file()
    assert (run.adapter / "chat_template.jinja").is_file() or "chat_template" in (
        run.adapter / "tokenizer_config.json").read_text()
    samples = [json.loads(line) for line in run.samples.read_text().splitlines()]
    assert len(samples) == 6 and {"baseline", "tuned", "reference"} <= set(samples[0])
    logged = [json.loads(line) for line in run.train_log.read_text().splitlines()]
    assert any("eval_loss" in record for record in logged) and any("loss" in record for record in logged)
    assert "contains_answer" in result.output


def test_evaluate_alone_on_another_file_rewrites_metrics(finished_run, tmp_path):
    run, _, _ = finished_run
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"prompt": "Where is the head office?", "completion": "In Bergen."}) + "\n")
    result = invoke("evaluate", str(run.root), "--data", str(extra))
    assert result.exit_code == 0, result.output
    assert read_json(run.metrics)["heldout"]["rows"] == 1


def test_chat_prompt_and_merged_export_give_the_same_greedy_answer(finished_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run, _, _ = finished_run
    chat = invoke("chat", str(run.root), "--prompt", "Where is the head office?", "--max-new-tokens", "6")
    assert chat.exit_code == 0, chat.output

    out = tmp_path / "export"
    exported = invoke("export", str(run.root), "--out", str(out), "--merge")
    assert exported.exit_code == 0, exported.output
    assert (out / "README.md").is_file() and not (out / "adapter_config.json").exists()

    model = AutoModelForCausalLM.from_pretrained(out)
    tokenizer = AutoTokenizer.from_pretrained(out)
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Where is the head office?"}], add_generation_prompt=True,
        return_tensors="pt", return_dict=True,
    )
    with torch.inference_mode():
        output = model.generate(**encoded, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    answer = tokenizer.decode(output[0, encoded["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    assert answer == chat.output.strip()


def test_adapter_export_without_merge_copies_the_adapter(finished_run, tmp_path):
    run, _, _ = finished_run
    out = tmp_path / "adapter-export"
    assert invoke("export", str(run.root), "--out", str(out)).exit_code == 0
    assert (out / "adapter_config.json").is_file()
    second = runner.invoke(app, ["export", str(run.root), "--out", str(out)])
    assert second.exit_code != 0


def test_full_fine_tuning_saves_a_whole_model(tmp_path, tiny_config):
    tiny_config["train"].update(method="full", learning_rate=1e-3, max_steps=4)
    tiny_config["evaluate"]["baseline"] = False
    config = write_config(tmp_path / "full.yaml", tiny_config)
    result = invoke("run", str(config))
    assert result.exit_code == 0, result.output
    run = RunDir(tmp_path / "run")
    assert (run.model / "config.json").is_file() and not run.adapter.exists()
    assert "baseline" not in read_json(run.metrics)


def test_existing_run_directory_needs_resume_or_overwrite(finished_run):
    _, config, _ = finished_run
    result = runner.invoke(app, ["run", str(config)])
    assert result.exit_code != 0
    from tuneloop.errors import TuneloopError

    assert isinstance(result.exception, TuneloopError) and "--resume" in str(result.exception)


def test_resume_refuses_a_changed_config(finished_run):
    _, config, _ = finished_run
    result = runner.invoke(app, ["run", str(config), "--resume", "--set", "train.learning_rate=0.1"])
    assert result.exit_code != 0 and "train.learning_rate" in str(result.exception)


def _tuneloop(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "tuneloop.cli", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def _wait_for_checkpoint(run: RunDir, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while run.last_checkpoint() is None:
        assert process.poll() is None, process.stdout.read()
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.2)


@pytest.mark.parametrize("stop_signal", [signal.SIGINT, signal.SIGKILL])
def test_interrupted_training_resumes_from_its_checkpoint(tmp_path, tiny_config, stop_signal):
    tiny_config["train"].update(max_steps=400, save_every=5, eval_every=5, save_total_limit=2)
    tiny_config["train"]["early_stopping_patience"] = None
    config = write_config(tmp_path / "long.yaml", tiny_config)
    run = RunDir(tmp_path / "run")

    process = _tuneloop("train", str(config))
    _wait_for_checkpoint(run, process)
    process.send_signal(stop_signal)
    output, _ = process.communicate(timeout=120)
    if stop_signal == signal.SIGINT:
        assert process.returncode == 130, output
        assert "--resume" in output and "Traceback" not in output
    stopped_at = int(run.last_checkpoint().name.split("-")[-1])
    assert 0 < stopped_at < 400

    tiny_config["train"]["max_steps"] = stopped_at + 10  # finish quickly; same config otherwise
    resumed = runner.invoke(app, ["train", str(write_config(tmp_path / "long.yaml", tiny_config)), "--resume",
                                  "--set", f"train.max_steps={stopped_at + 10}"])
    # max_steps is part of the train section, so resuming with a new value is refused...
    assert resumed.exit_code != 0 and "train.max_steps" in str(resumed.exception)
    # ...and resuming with the original config continues from the checkpoint, not from step 0.
    tiny_config["train"]["max_steps"] = 400
    write_config(tmp_path / "long.yaml", tiny_config)
    process = _tuneloop("train", str(config), "--resume")
    deadline = time.monotonic() + 120
    while True:
        state = run.last_checkpoint()
        if state is not None and int(state.name.split("-")[-1]) > stopped_at:
            break
        assert process.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    output, _ = process.communicate(timeout=120)
    assert f"resuming from checkpoint-{stopped_at}" in output
    first_logged = [json.loads(line) for line in run.train_log.read_text().splitlines()]
    assert min(r["step"] for r in first_logged) <= 5  # the log of the first session was kept
    train_steps = [r["step"] for r in first_logged if "loss" in r]
    assert train_steps == sorted(set(train_steps))  # steps redone after the checkpoint are logged once


def test_plain_text_data_goes_to_continued_pretraining_and_reports_perplexity(tmp_path, tiny_config):
    rows = [{"text": f"{q} {a}"} for q, a, _ in FACTS] * 3
    tiny_config["data"] = {"train_file": str(write_jsonl(tmp_path / "text.jsonl", rows)), "max_length": 64}
    tiny_config["train"]["max_steps"] = 2
    result = invoke("run", str(write_config(tmp_path / "text.yaml", tiny_config)))
    assert result.exit_code == 0, result.output
    metrics = read_json(RunDir(tmp_path / "run").metrics)
    assert metrics["task"] == "continued pretraining" and metrics["heldout"]["rows_with_answer"] == 0
    assert set(metrics["tuned"]) == {"domain_perplexity", "domain_loss"}
