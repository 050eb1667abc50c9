"""DPO and KTO training speed and memory of tuneloop against TRL's trainers with their defaults, same data and LoRA.

Both train one epoch on the same HH-RLHF harmless pairs (../shared/datasets/hh-rlhf, the seeded split of
benchmarks/hh_dpo.yaml, prompts fitted to half of max length 128 by tuneloop's preference rows), on
smollm2-135m-instruct with the same LoRA (r 16, alpha 32, no dropout, all linear layers), batch 8 pairs and
the same optimizer settings (lr 5e-4, beta 0.05, warm-up 10%; TRL's lr default of 1e-6 would leave both models
where they started). Everything else is each tool's default: TRL pads each batch (chosen and rejected stacked),
checkpoints activations, keeps fp32 weights under bf16 autocast and runs the reference (the adapter switched off)
in every step; tuneloop packs each batch into one row, scores reply tokens only, keeps the frozen base in bf16
and computes the reference log-probs once before training. Each run is its own subprocess (peak RSS is its
own) and its time covers loading the model, preparing the trainer (tuneloop's reference pass included) and
training. TRL is given no validation set (its default evaluates nothing); tuneloop always validates, so it
gets the smallest set it takes, 2 pairs (VALIDATION_PAIRS; its reference pass and final evaluation cover
them too). Tokens are real tokens, chosen + rejected, no padding: the trainers' own counters, which must agree.

--recipe kto does the same with TRL's KTOTrainer and tuneloop's KTO on the same pairs split into one desirable
and one undesirable row each (tuneloop's unpaired rows, in the order the recipe shuffles them, since KTO's KL
term pairs neighbours in a batch): tokens are each row's prompt + completion, as TRL counts them (the
mismatched KL completions both compute are not counted).

Afterwards every trained adapter and the base are scored by the same code on the same held-out pairs
(preference accuracy: the chosen reply has the higher per-token log-likelihood; Wilson 95% interval).

Prints one JSON line per run, then the medians, then one line with tokens_per_s_ratio and peak_rss_ratio
(tuneloop / TRL). Targets (issue 25): tokens/s >= 3x, peak RSS <= 0.6x, held-out accuracy no worse.

    .venv/bin/python benchmarks/preference_throughput.py                 # 128 pairs (16 steps), 3 repeats
    .venv/bin/python benchmarks/preference_throughput.py --pairs 64 --repeats 1 --heldout 100
    .venv/bin/python benchmarks/preference_throughput.py --trl-dtype default   # TRL's bf16 even where it is slow
    .venv/bin/python benchmarks/preference_throughput.py --recipe kto

Run it alone on the machine (no tests beside it) and quote the load average it prints.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The SFT benchmark's VmHWM reading, options, load average and repeat loop
from train_throughput import add_comparison_arguments, load_average, peak_rss_gb, run_repeats  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HH = ROOT / ".." / "shared" / "datasets" / "hh-rlhf" / "harmless-base" / "test.jsonl.gz"
MODEL = "smollm2-135m-instruct"
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}
BATCH_SIZE, MAX_LENGTH, LEARNING_RATE, BETA, WARMUP = 8, 128, 5e-4, 0.05, 0.1
VALIDATION_PAIRS = 2


def run_config(output_dir: Path, pairs: int, recipe: str = "dpo") -> dict:
    """tuneloop's config for the run: hh_dpo.yaml's data and settings, with the shared LoRA and no evaluation."""
    return {
        "output_dir": str(output_dir), "seed": 42, "model": {"name": MODEL},
        "data": {"train_file": str(HH), "test_size": 0.2, "max_train_examples": pairs,
                 "max_validation_examples": VALIDATION_PAIRS,
                 "max_length": MAX_LENGTH, "skip_invalid": True, "audit": {"enabled": False}},
        "train": {"recipe": recipe, "method": "lora", "preset": "none", "epochs": 1, "batch_size": BATCH_SIZE,
                  "learning_rate": LEARNING_RATE, "warmup_ratio": WARMUP, "eval_every": 10**6, "save_every": 10**6,
                  "early_stopping_patience": None, "logging_steps": 1000,
                  "lora": {"rank": LORA["r"], "alpha": LORA["lora_alpha"], "dropout": LORA["lora_dropout"]},
                  "preference": {"loss": "sigmoid" if recipe == "dpo" else "kto", "beta": BETA}},
        "tracking": {"backend": "none"},
    }


def prepare(workdir: Path, pairs: int, recipe: str):
    """The split both tools read: tuneloop's data stage on the HH file, once."""
    from tuneloop.config.load import validate_config
    from tuneloop.stages import data_stage, open_for_run

    config = validate_config(run_config(workdir / "prepared", pairs, recipe))
    run = open_for_run(config, overwrite=True)
    data_stage(config, run, lambda *a, **k: None)
    return config, run


def compute_dtype():
    """The dtype tuneloop picks on this machine (bf16 only where the CPU runs it fast)."""
    from tuneloop.models.device import pick_dtype

    return pick_dtype("cpu")


def run_trl(out: Path, pairs: int, prepared: Path, trl_dtype: str, recipe: str) -> dict:
    """TRL's DPOTrainer (or KTOTrainer) with its defaults but for the shared settings above.

    Unless trl_dtype is "default", TRL computes in the dtype tuneloop picks here: TRL's bf16 default on a CPU
    without AVX512-BF16 runs emulated bf16 matmuls, which measured 70x slower than fp32 on such a machine and would
    say nothing about the training path.
    """
    import random

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    from tuneloop.config.load import validate_config
    from tuneloop.models.load import load_causal_lm
    from tuneloop.models.registry import resolve_model
    from tuneloop.recipes.preference_data import preference_rows, unpaired_rows
    from tuneloop.train.model_setup import setup_tokenizer
    from tuneloop.workspace import RunDir

    config = validate_config(run_config(prepared, pairs, recipe))
    base = resolve_model(MODEL, lambda *a: None)
    started = time.perf_counter()
    tokenizer = setup_tokenizer(config, base)
    if recipe == "kto":
        rows = unpaired_rows(config, RunDir(prepared), "train", tokenizer, lambda *a: None)
        random.Random(config.seed).shuffle(rows)  # as recipes/kto.py: the KL term pairs neighbours in a batch
        trainer_config, trainer_class = KTOConfig, KTOTrainer
    else:
        rows = preference_rows(config, RunDir(prepared), "train", tokenizer, lambda *a: None)
        trainer_config, trainer_class = DPOConfig, DPOTrainer
    dtype = {} if trl_dtype == "default" else {"bf16": compute_dtype() == torch.bfloat16}
    args = trainer_config(output_dir=str(out / "trl-checkpoints"), per_device_train_batch_size=BATCH_SIZE,
                     max_length=MAX_LENGTH, num_train_epochs=1, save_strategy="no", report_to="none",
                     logging_steps=1000, seed=42, use_cpu=True, disable_tqdm=True, learning_rate=LEARNING_RATE,
                     warmup_steps=WARMUP, beta=BETA, include_num_input_tokens_seen="non_padding", **dtype)
    trainer = trainer_class(model=load_causal_lm(base, torch.float32), args=args, processing_class=tokenizer,
                         train_dataset=Dataset.from_list(rows), peft_config=LoraConfig(task_type="CAUSAL_LM", **LORA))
    trainer.train()
    seconds = time.perf_counter() - started
    trainer.model.save_pretrained(str(out / "trained"))
    return {"tokens": int(trainer.state.num_input_tokens_seen), "seconds": seconds,
            "gradient_checkpointing": bool(args.activation_checkpointing), "bf16": bool(args.bf16)}


def run_tuneloop(out: Path, pairs: int, recipe: str) -> dict:
    """tuneloop's DPO (or KTO) recipe with its defaults, through the stages `tuneloop train` runs."""
    # The libraries are imported before the clock starts, as run_trl imports TRL before its clock (about 7 s here).
    import tuneloop.recipes.dpo  # noqa: F401
    import tuneloop.recipes.kto  # noqa: F401
    from tuneloop.config.load import validate_config
    from tuneloop.stages import data_stage, open_for_run, train_stage

    config = validate_config(run_config(out / "run", pairs, recipe))
    run = open_for_run(config, overwrite=True)
    quiet = lambda *args, **kwargs: None  # noqa: E731
    data_stage(config, run, quiet)
    started = time.perf_counter()
    summary = train_stage(config, run, console_print=quiet)
    seconds = time.perf_counter() - started
    (out / "trained").symlink_to(run.adapter.resolve())
    return {"tokens": int(summary["tokens_seen"]), "seconds": seconds, "fit_seconds": summary["seconds"]}


def worker(tool: str, workdir: Path, pairs: int, trl_dtype: str, recipe: str) -> None:
    from tuneloop.train.allocator import current_allocator

    out = workdir / f"{tool}-{time.time_ns()}"
    out.mkdir()
    result = (run_trl(out, pairs, workdir / "prepared", trl_dtype, recipe) if tool == "trl" else
              run_tuneloop(out, pairs, recipe))
    result.update(tool=tool, tokens_per_second=result["tokens"] / result["seconds"], peak_rss_gb=peak_rss_gb(),
                  allocator=current_allocator(), trained=str(out / "trained"))
    print("RESULT " + json.dumps(result), flush=True)


def wilson(correct: int, total: int) -> tuple[float, float]:
    z = 1.96
    share = correct / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return round(100 * (centre - half), 1), round(100 * (centre + half), 1)


def heldout_accuracy(adapter: str | None, config, run, limit: int) -> dict:
    """Preference accuracy of the base (adapter None) or a trained adapter on the first `limit` held-out pairs."""
    import torch

    from tuneloop.evaluate.preference import pair_log_probs, preference_correct
    from tuneloop.models.load import load_causal_lm
    from tuneloop.models.registry import resolve_model
    from tuneloop.train.model_setup import setup_tokenizer
    from tuneloop.workspace import read_jsonl

    base = resolve_model(MODEL, lambda *a: None)
    model = load_causal_lm(base, torch.float32)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    pairs = read_jsonl(run.split("test"))[:limit]
    with torch.autocast("cpu", dtype=compute_dtype(), enabled=compute_dtype() != torch.float32):
        scores = pair_log_probs(model.eval(), setup_tokenizer(config, base), pairs, MAX_LENGTH, 16, "held-out")
    correct = int((preference_correct(scores) > 0).sum())
    return {"accuracy": round(100 * correct / len(pairs), 1), "interval": wilson(correct, len(pairs)),
            "pairs": len(pairs)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=128, help="training pairs (one epoch; batch 8)")
    parser.add_argument("--heldout", type=int, default=200, help="held-out pairs scored for preference accuracy")
    parser.add_argument("--recipe", choices=["dpo", "kto"], default="dpo", help="the objective both train")
    parser.add_argument("--trl-dtype", choices=["same", "default"], default="same",
                        help="same: TRL computes in the dtype tuneloop picks here; default: TRL's bf16 default")
    add_comparison_arguments(parser)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.workdir, args.pairs, args.trl_dtype, args.recipe)
        return 0
    if not HH.is_file():
        print(f"skipped: {HH} is absent (the shared datasets folder is not beside this checkout)")
        return 0

    tools = [args.only] if args.only else ["trl", "tuneloop"]
    print(json.dumps({"load_average_at_start": load_average(), "recipe": args.recipe, "pairs": args.pairs,
                      "repeats": args.repeats,
                      "compute_dtype": str(compute_dtype()), "trl_dtype": args.trl_dtype}), flush=True)
    with tempfile.TemporaryDirectory(prefix="tuneloop-preference-") as tmp:
        workdir = Path(tmp)
        config, prepared = prepare(workdir, args.pairs, args.recipe)
        base = heldout_accuracy(None, config, prepared, args.heldout)
        print(json.dumps({"base": base}), flush=True)
        results = run_repeats(tools, args.repeats, lambda tool: [
            sys.executable, __file__, "--worker", tool, "--workdir", str(workdir), "--pairs", str(args.pairs),
            "--trl-dtype", args.trl_dtype, "--recipe", args.recipe],
            lambda result: result.update(heldout=heldout_accuracy(result.pop("trained"), config, prepared,
                                                                  args.heldout)), cwd=ROOT)
        if results is None:
            return 1

    medians = {tool: {"tokens_per_second": statistics.median(r["tokens_per_second"] for r in runs),
                      "peak_rss_gb": statistics.median(r["peak_rss_gb"] for r in runs),
                      "seconds": statistics.median(r["seconds"] for r in runs),
                      "heldout_accuracy": statistics.median(r["heldout"]["accuracy"] for r in runs),
                      "tokens": statistics.median(r["tokens"] for r in runs)}
               for tool, runs in results.items()}
    print(json.dumps({"median": medians, "base_heldout_accuracy": base["accuracy"]}))
    if len(tools) == 2:
        ours, peer = medians["tuneloop"], medians["trl"]
        print(json.dumps({
            "tokens_per_s_ratio": round(ours["tokens_per_second"] / peer["tokens_per_second"], 2),
            "peak_rss_ratio": round(ours["peak_rss_gb"] / peer["peak_rss_gb"], 2),
            "heldout_accuracy": {"tuneloop": ours["heldout_accuracy"], "trl": peer["heldout_accuracy"],
                                 "base": base["accuracy"]},
            "real_tokens": {"tuneloop": ours["tokens"], "trl": peer["tokens"]},
            "load_average_at_end": load_average(),
        }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
