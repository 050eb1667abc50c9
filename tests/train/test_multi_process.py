"""Two training processes (DDP over gloo, launched through accelerate) match one at the same global batch."""

from __future__ import annotations

import pytest

from tuneloop.config.load import validate_config
from tuneloop.errors import TuneloopError
from tuneloop.stages import run_all
from tuneloop.train.launch import Launch, accelerate_config_file, launch_command
from tuneloop.workspace import RunDir, read_jsonl


def _losses(tiny_config, tmp_path, name, batch_size, launch):
    raw = {**tiny_config, "output_dir": str(tmp_path / name)}
    raw["train"] = {**tiny_config["train"], "max_steps": 6, "batch_size": batch_size, "early_stopping_patience": None,
                    "eval_every": 3, "save_every": 3}
    raw["data"] = {**tiny_config["data"], "audit": {"enabled": False}}
    run, summary = run_all(validate_config(raw), evaluate=False, console_print=lambda *a: None, launch=launch)
    return [r["loss"] for r in read_jsonl(run.train_log) if "loss" in r], summary, run


def test_two_processes_follow_the_loss_curve_of_one_at_the_same_global_batch(tiny_config, tmp_path):
    one, one_summary, _ = _losses(tiny_config, tmp_path, "one", 4, None)
    two, two_summary, run = _losses(tiny_config, tmp_path, "two", 2, Launch(nproc=2, master_port=29517))
    assert len(one) == len(two) == 6
    assert two == pytest.approx(one, rel=1e-2)
    assert two_summary["steps"] == one_summary["steps"] == 6
    # Process 0 alone wrote the weights and the log: one record per step, not two.
    assert run.trained_weights() is not None
    assert [r["step"] for r in read_jsonl(run.train_log) if "loss" in r] == list(range(1, 7))


def test_launch_command_uses_accelerate_with_the_shipped_strategy_files(tmp_path):
    run = RunDir(tmp_path / "run")
    command = launch_command(run, Launch(nproc=4, nnodes=2, node_rank=1, master_addr="10.0.0.1"), resume=True)
    assert command[1:3] == ["-m", "accelerate.commands.launch"]
    assert command[command.index("--num_processes") + 1] == "8"
    assert command[command.index("--machine_rank") + 1] == "1"
    assert command[-3:] == ["tuneloop.worker", str(run.root), "--resume"]
    for name in ("ddp", "fsdp", "deepspeed-zero2", "deepspeed-zero3"):
        assert accelerate_config_file(name).is_file()
    with pytest.raises(TuneloopError, match="neither a shipped config"):
        accelerate_config_file("zero9")
