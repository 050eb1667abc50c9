"""Training commands re-run themselves under jemalloc on Linux, saying so once; TUNELOOP_ALLOCATOR=system: glibc."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tuneloop.train.allocator import SWITCH, command_of, find_jemalloc, training_environment, wanted
from tuneloop.workspace import read_json

TUNELOOP = [sys.executable, "-m", "tuneloop.cli"]
needs_jemalloc = pytest.mark.skipif(
    find_jemalloc() is None or not sys.platform.startswith("linux"),
    reason="no libjemalloc on this machine (`make test` installs libjemalloc2 where it may: apt-get)")


def _tuneloop(*args, **env):
    environ = {k: v for k, v in os.environ.items() if k not in (SWITCH, "LD_PRELOAD", "TUNELOOP_ALLOCATOR_SAID")}
    return subprocess.run([*TUNELOOP, *args], capture_output=True, text=True, env={**environ, **env}, timeout=600)


def test_the_switch_and_the_command_decide():
    assert not wanted({SWITCH: "system"}) and not wanted({SWITCH: "glibc"})
    assert "LD_PRELOAD" not in training_environment({SWITCH: "system"})[0]
    assert command_of(["tuneloop", "--verbose", "train", "x.yaml"]) == "train"
    assert command_of(["tuneloop"]) is None


@needs_jemalloc
def test_a_training_command_trains_under_jemalloc_and_says_so_once(tmp_path, tiny_model_dir, pair_files):
    import yaml
    from conftest import preference_run_config

    config = tmp_path / "dpo.yaml"
    config.write_text(yaml.safe_dump(preference_run_config(tmp_path / "run", tiny_model_dir, pair_files, "dpo",
                                                           max_steps=2)))
    done = _tuneloop("train", str(config))
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stderr.count("allocator: jemalloc") == 1
    assert read_json(tmp_path / "run" / "train_summary.json")["allocator"] == "jemalloc"


def test_the_switch_keeps_the_c_library_malloc_and_prints_nothing(tmp_path):
    done = _tuneloop("train", str(tmp_path / "missing.yaml"), **{SWITCH: "system"})
    assert done.returncode == 2 and "no such config file" in done.stderr
    assert "allocator" not in done.stderr


def test_other_commands_are_left_alone():
    done = _tuneloop("models", "list")
    assert done.returncode == 0 and "allocator" not in done.stderr
