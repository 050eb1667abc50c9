"""Training in several processes (one host or several) through `accelerate launch`: DDP, FSDP or DeepSpeed ZeRO.

The launching process prepares the data once; each worker process then runs the same train stage on
the run directory (`python -m tuneloop.worker RUN_DIR`), and Trainer shards batches across
them: DDP over gloo on CPUs and NCCL on GPUs, or FSDP / DeepSpeed through one of the accelerate
config files shipped in tuneloop/accelerate_configs (or your own). The global batch is
train.batch_size x gradient_accumulation x processes. Only process 0 writes logs, checkpoints and weights;
with several hosts the run directory must be on a filesystem they share.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tuneloop.errors import TuneloopError
from tuneloop.workspace import RunDir, read_json

SHIPPED_CONFIGS = Path(__file__).resolve().parents[1] / "accelerate_configs"


@dataclass
class Launch:
    """Where the processes run: `nproc` per host on `nnodes` hosts; this host is `node_rank`."""

    nproc: int = 1
    nnodes: int = 1
    node_rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500
    accelerate_config: str | None = None  # a shipped name (ddp, fsdp, deepspeed-zero2, deepspeed-zero3) or a path

    @property
    def distributed(self) -> bool:
        return self.nproc * self.nnodes > 1 or self.accelerate_config is not None


def accelerate_config_file(name_or_path: str) -> Path:
    shipped = SHIPPED_CONFIGS / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    path = Path(name_or_path)
    if path.is_file():
        return path
    names = sorted(p.stem for p in SHIPPED_CONFIGS.glob("*.yaml"))
    raise TuneloopError(
        f"--accelerate-config {name_or_path}: neither a shipped config ({', '.join(names)}) nor a file. "
        "Write one with `accelerate config --config_file my.yaml`, or pick a shipped name."
    )


def launch_command(run: RunDir, launch: Launch, resume: bool) -> list[str]:
    command = [sys.executable, "-m", "accelerate.commands.launch"]
    if launch.accelerate_config:
        command += ["--config_file", str(accelerate_config_file(launch.accelerate_config))]
    else:
        # DDP through torchrun; on CPUs Trainer picks the gloo backend, on GPUs NCCL.
        command += ["--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no"]
    command += [
        "--num_processes", str(launch.nproc * launch.nnodes),
        "--num_machines", str(launch.nnodes),
        "--machine_rank", str(launch.node_rank),
        "--main_process_ip", launch.master_addr,
        "--main_process_port", str(launch.master_port),
        "--num_cpu_threads_per_process", str(_threads_per_process(launch.nproc)),
        "-m", "tuneloop.worker", str(run.root),
    ]
    return command + (["--resume"] if resume else [])


def train_in_processes(run: RunDir, launch: Launch, resume: bool, console_print=print) -> dict:
    """Launch the workers, wait for them, and return the summary process 0 wrote."""
    command = launch_command(run, launch, resume)
    console_print(
        f"train: {launch.nproc} process(es) on each of {launch.nnodes} host(s) via accelerate"
        + (f" ({launch.accelerate_config})" if launch.accelerate_config else " (DDP)")
    )
    env = {**os.environ, "TUNELOOP_DISTRIBUTED": "1", "PYTHONUNBUFFERED": "1"}
    finished = subprocess.run(command, env=env)
    if finished.returncode == 130:
        from tuneloop.errors import TrainingInterrupted

        raise TrainingInterrupted(f"interrupted; continue with `tuneloop train {run.config} --resume`.")
    if finished.returncode != 0:
        raise TuneloopError(
            f"training processes failed (exit code {finished.returncode}); their messages are above. "
            f"Command: {' '.join(command)}"
        )
    summary = run.root / "train_summary.json"
    if launch.node_rank != 0:
        return {"node_rank": launch.node_rank}  # process 0 (on node 0) writes the summary
    return read_json(summary)


def _threads_per_process(nproc: int) -> int:
    return max(1, (os.cpu_count() or 1) // max(nproc, 1))
