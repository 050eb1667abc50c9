"""GRPO speed and memory of tuneloop against TRL's GRPOTrainer with its defaults: sampling and training apart.

Both train the same steps on the same arithmetic prompts (examples/data/arithmetic, written by
tuneloop.demos.arithmetic), on smollm2-135m-instruct with benchmarks/grpo_arithmetic.yaml's settings: LoRA r 16,
alpha 32 on q_proj and v_proj, no dropout; 8 sampled replies per step (2 prompts x 4), at most 40 tokens each,
temperature 0.8, beta 0.04, lr 8e-4; the same reward functions (answer_match on "Answer: N" and the format
hint at 0.3). Everything else is each tool's default: TRL prefills each prompt once per reply, checkpoints
activations and runs the policy and reference passes on the padded [replies, prompt + completion] batch;
tuneloop prefills each prompt once per group and runs both passes on one packed row per batch, reply tokens
only through the LM head (tuneloop.train.packed_groups). TRL computes in the dtype tuneloop picks here (fp32
on a CPU without fast bf16, as benchmarks/preference_throughput.py explains).

Each run is its own subprocess (peak RSS is its own). The same wrapper around GRPOTrainer._generate, which
both tools' trainers run, times the sampling (generation and decoding) and counts the tokens: every sampled
reply's prompt + completion, no padding. The training step's time is the rest of the training: the policy
and reference passes, backward, the optimizer and the rewards. Afterwards every trained adapter and the base
reply greedily to the same held-out problems and are scored by the same checker (answer_match; Wilson 95%
interval).

Prints one JSON line per run, then the medians, then one line with training_tokens_per_s_ratio,
sampling_tokens_per_s_ratio and peak_rss_ratio (tuneloop / TRL).

    .venv/bin/python benchmarks/grpo_throughput.py                  # 8 steps, 3 repeats, 60 held-out problems
    .venv/bin/python benchmarks/grpo_throughput.py --steps 16 --repeats 1

Run it alone on the machine (no tests beside it) and quote the load average it prints.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from preference_throughput import compute_dtype, wilson  # noqa: E402
from train_throughput import add_comparison_arguments, load_average, peak_rss_gb, run_repeats  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data" / "arithmetic"
MODEL = "smollm2-135m-instruct"
TARGETS = ["q_proj", "v_proj"]
GENERATIONS, BATCH_SIZE, COMPLETION, TEMPERATURE, BETA, LEARNING_RATE = 4, 8, 40, 0.8, 0.04, 8e-4
REWARDS = [{"function": "answer_match", "column": "answer", "pattern": r"Answer: *(-?\d+)\.?\s*$"},
           {"function": "format_regex", "pattern": r"Answer: *-?\d+\.?\s*$", "weight": 0.3}]


def run_config(output_dir: Path, steps: int) -> dict:
    """tuneloop's config: grpo_arithmetic.yaml's data and settings for `steps` steps, no evaluation."""
    return {
        "output_dir": str(output_dir), "seed": 42, "model": {"name": MODEL},
        "data": {"train_file": str(DATA / "train.jsonl"), "test_file": str(DATA / "test.jsonl"), "max_length": 256,
                 "audit": {"enabled": False}},
        "train": {"method": "lora", "preset": "none", "max_steps": steps, "learning_rate": LEARNING_RATE,
                  "lr_scheduler": "constant_with_warmup", "warmup_ratio": 0.05, "batch_size": BATCH_SIZE,
                  "save_every": 10**6, "logging_steps": 1000,
                  "lora": {"rank": 16, "alpha": 32, "dropout": 0.0, "target_modules": TARGETS},
                  "grpo": {"num_generations": GENERATIONS, "max_completion_length": COMPLETION,
                           "temperature": TEMPERATURE, "beta": BETA},
                  "rewards": REWARDS},
        "tracking": {"backend": "none"},
    }


def prepare(workdir: Path, steps: int):
    """The prompt rows both tools read: tuneloop's data stage, once."""
    from tuneloop.config.load import validate_config
    from tuneloop.stages import data_stage, open_for_run

    config = validate_config(run_config(workdir / "prepared", steps))
    run = open_for_run(config, overwrite=True)
    data_stage(config, run, lambda *a, **k: None)
    return config, run


def time_sampling() -> dict:
    """Wrap GRPOTrainer._generate (both tools' trainers run it): its seconds and the tokens it returns."""
    from trl import GRPOTrainer

    totals = {"sampling_seconds": 0.0, "tokens": 0, "completion_tokens": 0}
    generate = GRPOTrainer._generate

    def timed(self, prompts):
        started = time.perf_counter()
        output = generate(self, prompts)
        if self.model.training:
            totals["sampling_seconds"] += time.perf_counter() - started
            prompt_ids, completion_ids = output[0], output[1]
            totals["completion_tokens"] += sum(len(ids) for ids in completion_ids)
            totals["tokens"] += sum(len(ids) for ids in prompt_ids) + sum(len(ids) for ids in completion_ids)
        return output

    GRPOTrainer._generate = timed
    return totals


def run_trl(out: Path, steps: int, prepared: Path) -> dict:
    """TRL's GRPOTrainer with its defaults but for the shared settings above."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer

    from tuneloop.config.load import validate_config
    from tuneloop.models.load import load_causal_lm
    from tuneloop.models.registry import resolve_model
    from tuneloop.train.model_setup import setup_tokenizer
    from tuneloop.train.rewards import resolve_rewards
    from tuneloop.workspace import RunDir, read_jsonl

    config = validate_config(run_config(prepared, steps))
    base = resolve_model(MODEL, lambda *a: None)
    totals = time_sampling()
    started = time.perf_counter()
    tokenizer = setup_tokenizer(config, base)
    rewards = resolve_rewards(config.train.rewards)
    args = GRPOConfig(output_dir=str(out / "trl-checkpoints"), per_device_train_batch_size=BATCH_SIZE,
                      num_generations=GENERATIONS, max_completion_length=COMPLETION, temperature=TEMPERATURE,
                      beta=BETA, learning_rate=LEARNING_RATE, lr_scheduler_type="constant_with_warmup",
                      warmup_steps=0.05, max_steps=steps, save_strategy="no", report_to="none",
                      logging_steps=1000, seed=42, use_cpu=True, disable_tqdm=True,
                      bf16=compute_dtype() == torch.bfloat16, reward_weights=[r.weight for r in rewards])
    trainer = GRPOTrainer(model=load_causal_lm(base, torch.float32), reward_funcs=rewards, args=args,
                          processing_class=tokenizer,
                          train_dataset=Dataset.from_list(read_jsonl(RunDir(prepared).split("train"))),
                          peft_config=LoraConfig(task_type="CAUSAL_LM", r=16, lora_alpha=32, lora_dropout=0.0,
                                                 target_modules=TARGETS))
    trainer.train()
    seconds = time.perf_counter() - started
    trainer.model.save_pretrained(str(out / "trained"))
    return {**totals, "seconds": seconds, "gradient_checkpointing": bool(args.gradient_checkpointing)}


def run_tuneloop(out: Path, steps: int) -> dict:
    """tuneloop's GRPO recipe with its defaults, through the stages `tuneloop train` runs."""
    import tuneloop.recipes.grpo  # noqa: F401  (imported before the clock, as run_trl imports TRL before its clock)
    from tuneloop.config.load import validate_config
    from tuneloop.stages import data_stage, open_for_run, train_stage

    config = validate_config(run_config(out / "run", steps))
    run = open_for_run(config, overwrite=True)
    quiet = lambda *args, **kwargs: None  # noqa: E731
    data_stage(config, run, quiet)
    totals = time_sampling()
    started = time.perf_counter()
    train_stage(config, run, console_print=quiet)
    seconds = time.perf_counter() - started
    (out / "trained").symlink_to(run.adapter.resolve())
    return {**totals, "seconds": seconds}


def worker(tool: str, workdir: Path, steps: int) -> None:
    from tuneloop.train.allocator import current_allocator

    out = workdir / f"{tool}-{time.time_ns()}"
    out.mkdir()
    result = run_trl(out, steps, workdir / "prepared") if tool == "trl" else run_tuneloop(out, steps)
    training = result["seconds"] - result["sampling_seconds"]
    result.update(tool=tool, training_seconds=training, training_tokens_per_second=result["tokens"] / training,
                  sampling_tokens_per_second=result["completion_tokens"] / result["sampling_seconds"],
                  peak_rss_gb=peak_rss_gb(), allocator=current_allocator(), trained=str(out / "trained"))
    print("RESULT " + json.dumps(result), flush=True)


def heldout_accuracy(adapter: str | None, config, run, limit: int) -> dict:
    """answer_match accuracy of greedy replies by the base (adapter None) or a trained adapter."""
    import torch

    from tuneloop.models.generate import generate_replies
    from tuneloop.models.load import load_causal_lm
    from tuneloop.models.registry import resolve_model
    from tuneloop.train.model_setup import setup_tokenizer
    from tuneloop.train.rewards import answer_is_right
    from tuneloop.workspace import read_jsonl

    base = resolve_model(MODEL, lambda *a: None)
    model = load_causal_lm(base, torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    tokenizer = setup_tokenizer(config, base)
    rows = read_jsonl(run.split("test"))[:limit]
    prompts = [tokenizer.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True) for row in rows]
    replies = generate_replies(model.eval(), tokenizer, prompts, COMPLETION, 20, "held-out")
    pattern = REWARDS[0]["pattern"]
    correct = sum(answer_is_right(reply, row["answer"], pattern) for reply, row in zip(replies, rows, strict=True))
    return {"accuracy": round(100 * correct / len(rows), 1), "interval": wilson(correct, len(rows)),
            "problems": len(rows)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=8, help="training steps (8 sampled replies each)")
    parser.add_argument("--heldout", type=int, default=60, help="held-out problems scored for accuracy")
    add_comparison_arguments(parser)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.workdir, args.steps)
        return 0

    tools = [args.only] if args.only else ["trl", "tuneloop"]
    print(json.dumps({"load_average_at_start": load_average(), "steps": args.steps, "repeats": args.repeats,
                      "compute_dtype": str(compute_dtype())}), flush=True)
    with tempfile.TemporaryDirectory(prefix="tuneloop-grpo-") as tmp:
        workdir = Path(tmp)
        config, prepared = prepare(workdir, args.steps)
        base = heldout_accuracy(None, config, prepared, args.heldout)
        print(json.dumps({"base": base}), flush=True)
        results = run_repeats(tools, args.repeats, lambda tool: [
            sys.executable, __file__, "--worker", tool, "--workdir", str(workdir), "--steps", str(args.steps)],
            lambda result: result.update(heldout=heldout_accuracy(result.pop("trained"), config, prepared,
                                                                  args.heldout)), cwd=ROOT)
        if results is None:
            return 1

    keys = ("training_tokens_per_second", "sampling_tokens_per_second", "peak_rss_gb", "seconds",
            "sampling_seconds", "training_seconds", "tokens")
    medians = {tool: {key: statistics.median(r[key] for r in runs) for key in keys}
               | {"heldout_accuracy": statistics.median(r["heldout"]["accuracy"] for r in runs)}
               for tool, runs in results.items()}
    print(json.dumps({"median": medians, "base_heldout_accuracy": base["accuracy"]}))
    if len(tools) == 2:
        ours, peer = medians["tuneloop"], medians["trl"]

        def ratio(key):
            return round(ours[key] / peer[key], 2)

        print(json.dumps({
            "training_tokens_per_s_ratio": ratio("training_tokens_per_second"),
            "sampling_tokens_per_s_ratio": ratio("sampling_tokens_per_second"),
            "peak_rss_ratio": ratio("peak_rss_gb"),
            "heldout_accuracy": {"tuneloop": ours["heldout_accuracy"], "trl": peer["heldout_accuracy"],
                                 "base": base["accuracy"]},
            "load_average_at_end": load_average(),
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
