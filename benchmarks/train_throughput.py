"""Training speed and memory of tuneloop's SFT against TRL's SFTTrainer with its defaults, same model and data.

Both train one epoch on the same Alpaca rows (as chat) with the same LoRA (r=16, alpha 32, no dropout
(tuneloop's default), all linear layers) or full fine-tuning, batch 8, max length 512, and the same
optimizer settings (lr 2e-4, linear decay, no warm-up; TRL's lr default of 2e-5 would make the losses
incomparable). Everything else is each tool's default: TRL pads each batch, checkpoints activations and
keeps fp32 weights under bf16 autocast; tuneloop packs each batch into one row, computes the loss on reply
tokens only and keeps a frozen LoRA base in bf16. Each run is its own subprocess (so peak RSS is its own).
Afterwards both trained models are scored by the same code on the same held-out rows (loss on the reply
tokens).

Prints one JSON line per run, then the medians and the ratios tuneloop / TRL. Targets (issue 5):
tokens/s >= 10x, peak RSS <= 0.5x, validation loss no worse (within noise).

    .venv/bin/python benchmarks/train_throughput.py                   # LoRA, smollm2-135m-instruct, 3 repeats
    .venv/bin/python benchmarks/train_throughput.py --method full
    .venv/bin/python benchmarks/train_throughput.py --model gemma3-270m --repeats 1

Reads ../shared/datasets/alpaca/alpaca_5000.json (exits with a message when it is absent).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ALPACA = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "alpaca" / "alpaca_5000.json"
VALIDATION_START = 4000  # held-out rows come from the end of the file, far from the training rows
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}
SHARED_OPTIMIZER = {"learning_rate": 2e-4, "lr_scheduler_type": "linear", "warmup_steps": 0}
BATCH_SIZE, MAX_LENGTH = 8, 512


def chat_rows(start: int, count: int) -> list[dict]:
    rows = json.loads(ALPACA.read_text(encoding="utf-8"))[start:start + count]
    chats = []
    for row in rows:
        if not row["output"].strip():
            continue
        user = f"{row['instruction']}\n\n{row['input'].strip()}" if row["input"].strip() else row["instruction"]
        chats.append({"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]})
    return chats


def peak_rss_gb() -> float:
    """This process's peak resident memory. On Linux, VmHWM: ru_maxrss survives fork + exec, so a worker would
    report the parent's size at the moment it was started if the parent had grown larger (it scores models)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def add_comparison_arguments(parser: argparse.ArgumentParser) -> None:
    """The options every tuneloop-against-TRL benchmark takes: repeats, one side only, the worker's own."""
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=["trl", "tuneloop"], help="run one side only (no ratios)")
    parser.add_argument("--worker", choices=["trl", "tuneloop"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)


def worker_result(command: list[str], cwd: Path | None = None, tool: str = "trl") -> dict | None:
    """Run one worker subprocess and return what it printed after RESULT; None (its output shown) when it failed.

    tuneloop's worker starts as the `tuneloop` command starts a training process (jemalloc preloaded where it is
    installed: tuneloop.train.allocator); TRL's with the environment as it is.
    """
    from tuneloop.train.allocator import training_environment

    env = training_environment()[0] if tool == "tuneloop" else None
    done = subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=env)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if done.returncode or line is None:
        print(done.stdout[-3000:], done.stderr[-3000:], file=sys.stderr)
        return None
    return json.loads(line.removeprefix("RESULT "))


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_repeats(tools: list[str], repeats: int, command_of, score, cwd: Path | None = None,
                digits: int = 3) -> dict[str, list[dict]] | None:
    """Each tool's worker `repeats` times, the tools taking turns (so drift on a noisy machine hits both alike).

    command_of(tool) is the worker's command line; score(result) adds the held-out figures to a worker's result
    (popping what it needs, such as the trained model's path). Each result is printed as one JSON line with its
    repeat and the load average as it ends. Returns the results per tool, or None when a worker failed (its output
    shown).
    """
    results: dict[str, list[dict]] = {tool: [] for tool in tools}
    for repeat in range(repeats):
        for tool in tools:
            result = worker_result(command_of(tool), cwd=cwd, tool=tool)
            if result is None:
                return None
            score(result)
            result.update(repeat=repeat, load_average=load_average())
            results[tool].append(result)
            print(json.dumps({k: round(v, digits) if isinstance(v, float) else v for k, v in result.items()}),
                  flush=True)
    return results


def run_trl(model_path: str, method: str, train_file: Path, out: Path) -> dict:
    """TRL SFTTrainer with its defaults (bf16 autocast, gradient checkpointing, padded batches)."""
    from datasets import load_dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from tuneloop.data.templates import apply_template_choice

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    apply_template_choice(tokenizer, "model" if tokenizer.chat_template else "plain", model_path)
    args = SFTConfig(
        output_dir=str(out / "trl-checkpoints"), per_device_train_batch_size=BATCH_SIZE, max_length=MAX_LENGTH,
        num_train_epochs=1, save_strategy="no", report_to="none", logging_steps=1000, seed=42, use_cpu=True,
        include_num_input_tokens_seen="non_padding", disable_tqdm=True, **SHARED_OPTIMIZER,
    )
    trainer = SFTTrainer(
        model=model_path, args=args, processing_class=tokenizer,
        train_dataset=load_dataset("json", data_files=str(train_file), split="train"),
        peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA) if method == "lora" else None,
    )
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    trainer.model.save_pretrained(str(out / "trained"))
    return {"tokens": int(trainer.state.num_input_tokens_seen), "seconds": seconds}


def run_tuneloop(model_name: str, method: str, train_file: Path, out: Path) -> dict:
    """tuneloop's SFT recipe with its defaults, through the same stages `tuneloop train` runs."""
    from tuneloop.config.load import validate_config
    from tuneloop.models.load import load_tokenizer
    from tuneloop.models.registry import resolve_model
    from tuneloop.stages import data_stage, open_for_run, train_stage

    # A base model without a chat template (gemma3-270m) gets the plain template, as on TRL's side.
    template = "model" if load_tokenizer(resolve_model(model_name, lambda *a: None)).chat_template else "plain"
    config = validate_config({
        "output_dir": str(out / "run"), "seed": 42, "model": {"name": model_name},
        "data": {"train_file": str(train_file), "validation_file": str(train_file.parent / "validation.jsonl"),
                 "max_length": MAX_LENGTH, "chat_template": template, "audit": {"enabled": False}},
        "train": {"method": method, "epochs": 1, "batch_size": BATCH_SIZE, "learning_rate": 2e-4,
                  "lr_scheduler": "linear", "warmup_ratio": 0.0, "eval_every": 10**6, "save_every": 10**6,
                  "early_stopping_patience": None, "logging_steps": 1000, "preset": "none",  # no few-shot k-fold
                  "lora": {"rank": LORA["r"], "alpha": LORA["lora_alpha"], "dropout": LORA["lora_dropout"]}},
        "tracking": {"backend": "none"},
    })
    run = open_for_run(config, overwrite=True)
    quiet = lambda *args, **kwargs: None  # noqa: E731
    data_stage(config, run, quiet)
    summary = train_stage(config, run, console_print=quiet)
    trained = run.trained_weights()
    (out / "trained").symlink_to(trained.resolve())
    return {"tokens": int(summary["tokens_seen"]), "seconds": summary["seconds"]}


def worker(tool: str, model: str, method: str, workdir: Path) -> None:
    from tuneloop.models.registry import resolve_model
    from tuneloop.train.allocator import current_allocator

    model_path = resolve_model(model, lambda *a: None)
    out = workdir / f"{tool}-{time.time_ns()}"
    out.mkdir()
    train_file = workdir / "train.jsonl"
    if tool == "trl":
        result = run_trl(model_path, method, train_file, out)
    else:
        result = run_tuneloop(model, method, train_file, out)
    result.update(tool=tool, tokens_per_second=result["tokens"] / result["seconds"], peak_rss_gb=peak_rss_gb(),
                  allocator=current_allocator(), trained=str(out / "trained"))
    print("RESULT " + json.dumps(result), flush=True)


def validation_loss_of(trained: str, model: str, method: str, workdir: Path) -> float:
    """Loss on the reply tokens of the held-out rows, scored by the same code for both tools."""
    import torch

    from tuneloop.data.encode import encode_examples
    from tuneloop.data.templates import apply_template_choice
    from tuneloop.models.load import load_causal_lm, load_tokenizer
    from tuneloop.models.registry import resolve_model
    from tuneloop.train.validation_loss import validation_loss
    from tuneloop.workspace import read_jsonl

    base = resolve_model(model, lambda *a: None)
    tokenizer = load_tokenizer(base)
    apply_template_choice(tokenizer, "model" if tokenizer.chat_template else "plain", base)
    if method == "lora":
        from peft import PeftModel

        network = PeftModel.from_pretrained(load_causal_lm(base, torch.float32), trained)
    else:
        network = load_causal_lm(trained, torch.float32)
    encoded, _ = encode_examples(tokenizer, read_jsonl(workdir / "validation.jsonl"), MAX_LENGTH, False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return validation_loss(network.eval(), encoded, tokenizer.pad_token_id, 8)["validation_loss"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--method", choices=["lora", "full"], default="lora")
    parser.add_argument("--rows", type=int, default=96, help="training rows (one epoch; batch 8)")
    parser.add_argument("--validation-rows", type=int, default=64)
    add_comparison_arguments(parser)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.model, args.method, args.workdir)
        return 0
    if not ALPACA.is_file():
        print(f"skipped: {ALPACA} is absent (the shared datasets folder is not beside this checkout)")
        return 0

    tools = [args.only] if args.only else ["trl", "tuneloop"]
    print(json.dumps({"load_average_at_start": load_average(), "model": args.model, "method": args.method,
                      "repeats": args.repeats}), flush=True)
    with tempfile.TemporaryDirectory(prefix="tuneloop-throughput-") as tmp:
        workdir = Path(tmp)
        for name, rows in (("train", chat_rows(0, args.rows)), ("validation", chat_rows(VALIDATION_START,
                                                                                         args.validation_rows))):
            (workdir / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

        def score(result: dict) -> None:
            result["validation_loss"] = validation_loss_of(result.pop("trained"), args.model, args.method, workdir)

        results = run_repeats(tools, args.repeats, lambda tool: [
            sys.executable, __file__, "--worker", tool, "--workdir", str(workdir), "--model", args.model,
            "--method", args.method], score, digits=4)
        if results is None:
            return 1

    medians = {tool: {key: statistics.median(r[key] for r in runs)
                      for key in ("tokens_per_second", "peak_rss_gb", "seconds", "validation_loss", "tokens")}
               for tool, runs in results.items()}
    print(json.dumps({"median": medians}))
    if len(tools) == 2:
        ours, peer = medians["tuneloop"], medians["trl"]
        print(json.dumps({
            "ratio_tokens_per_second": round(ours["tokens_per_second"] / peer["tokens_per_second"], 2),
            "ratio_peak_rss": round(ours["peak_rss_gb"] / peer["peak_rss_gb"], 2),
            "ratio_wall_time": round(ours["seconds"] / peer["seconds"], 3),
            "validation_loss_difference": round(ours["validation_loss"] - peer["validation_loss"], 4),
            "real_tokens": {"tuneloop": ours["tokens"], "trl": peer["tokens"]},
            "load_average_at_end": load_average(),
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
