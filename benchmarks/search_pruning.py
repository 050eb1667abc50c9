"""What pruning saves: the Banking77 study (benchmarks/search_intents.yaml) with median pruning, then the same
study, same sampler seed, with pruning off. Prints, for each: wall time of the trials, trials pruned, training steps
run, the best validation objective, and the winner's test score beside the default config's; then the ratio of
training steps (pruned / unpruned).

    python benchmarks/search_pruning.py [--trials 20] [--config benchmarks/search_intents.yaml]

Each study is an ordinary `tuneloop tune` run in its own subprocess; rerunning continues a study where it stopped.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import yaml


def tune(config: str, trials: int, overrides: list[str]) -> float:
    command = [sys.executable, "-m", "tuneloop.cli", "tune", config, "--trials", str(trials)]
    for item in overrides:
        command += ["--set", item]
    print("$", " ".join(command), flush=True)
    started = time.perf_counter()
    subprocess.run(command, check=True)
    return time.perf_counter() - started


def describe(name: str, results: dict, seconds: float) -> dict:
    counts = results["trials"]
    test = results.get("best", {}).get("test", {})
    default = results.get("default", {}).get("test", {})
    row = {
        "study": name, "command_seconds": round(seconds, 1), "trial_wall_seconds": results.get("wall_seconds"),
        "complete": counts.get("COMPLETE", 0), "pruned": counts.get("PRUNED", 0), "failed": counts.get("FAIL", 0),
        "training_steps": results["steps"]["total"], "best_validation": results["best"]["value"],
        "best_trial": results["best"]["trial"], "best_params": results["best"]["params"],
        "test_metric": results.get("test_metric"), "winner_test": test.get("value"),
        "winner_interval": test.get("interval"), "default_test": default.get("value"),
        "default_interval": default.get("interval"), "default_validation": results["default"].get("value"),
        "paired_test": results.get("paired_test"),
    }
    print(json.dumps(row, indent=2), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="benchmarks/search_intents.yaml")
    parser.add_argument("--trials", type=int, default=20)
    args = parser.parse_args()
    output_dir = Path(yaml.safe_load(Path(args.config).read_text())["output_dir"])
    unpruned_dir = output_dir.with_name(output_dir.name + "-nopruning")

    rows = []
    for name, root, overrides in (("median pruning", output_dir, []),
                                  ("no pruning", unpruned_dir, ["search.pruner=none", f"output_dir={unpruned_dir}"])):
        seconds = tune(args.config, args.trials, overrides)
        rows.append(describe(name, json.loads((root / "results.json").read_text()), seconds))
    pruned, unpruned = rows
    ratio = pruned["training_steps"] / unpruned["training_steps"]
    summary = {"studies": rows, "steps_ratio_pruned_over_unpruned": round(ratio, 3)}
    (output_dir.parent / f"{output_dir.name}-pruning-summary.json").write_text(json.dumps(summary, indent=2))
    print(f"training steps: {pruned['training_steps']} with pruning vs {unpruned['training_steps']} without: "
          f"{ratio:.2f}x ({1 / ratio:.2f}x fewer); best validation {pruned['best_validation']:.4f} vs "
          f"{unpruned['best_validation']:.4f}; trial wall time {pruned['trial_wall_seconds']} s vs "
          f"{unpruned['trial_wall_seconds']} s")


if __name__ == "__main__":
    main()
