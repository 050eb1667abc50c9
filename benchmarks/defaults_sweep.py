"""Sweep default candidates on several datasets, choose leave-one-dataset-out, and check the defaults table.

    python benchmarks/defaults_sweep.py [--part classify] [--trials 20] [--out runs/defaults-sweep]

For each dataset of a part (classification: Banking77, SST-2 and the quickstart's questions labelled by policy
topic, which the project writes itself), on the part's model:

1. every candidate of the part's grid trains on the training rows and is scored on validation rows;
   candidate 0 is the minimal config (model + data files only), which gets the defaults table's values;
2. a 20-trial Optuna search (TPE) over the keys that matter, its first trials the grid, finds the best
   validation score the search can reach;
3. each grid candidate and the search winner are scored once on the test rows.

Then, leave one dataset out: for each dataset D, the candidate with the best mean validation score (as a share
of each dataset's best) over the other datasets is "chosen without D", and its test score on D is compared with
the search winner's. The table prints per dataset: the minimal config's test score, the search winner's, their
ratio (the target is at least 0.90), and which candidate was chosen without D. Results go to
<out>/<part>/results.json; a rerun reuses finished trials.

Needs ../shared/datasets (Banking77, SST-2); a dataset missing there is skipped with a message.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "datasets"

CLASSIFY_GRID = [  # candidate 0, {}, is the minimal config: the defaults table decides every train.* key
    {},
    {"train.method": "full", "train.learning_rate": 5e-5, "train.epochs": 3, "train.batch_size": 16},
    {"train.method": "full", "train.learning_rate": 3e-4, "train.epochs": 3, "train.batch_size": 16},
    {"train.method": "full", "train.learning_rate": 1e-3, "train.epochs": 3, "train.batch_size": 16},
    {"train.method": "full", "train.learning_rate": 1e-4, "train.epochs": 6, "train.batch_size": 16},
    {"train.method": "lora", "train.learning_rate": 1e-3, "train.epochs": 3, "train.batch_size": 16},
]
CLASSIFY_SPACE = {
    "train.method": {"choice": ["lora", "full"]},
    "train.learning_rate": {"log_uniform": [1e-5, 3e-3]},
    "train.epochs": {"int": [1, 6]},
    "train.batch_size": {"choice": [8, 16, 32]},
    "train.warmup_ratio": {"uniform": [0.0, 0.2]},
}


def sample(rows: list[dict], count: int, seed: int) -> list[dict]:
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    return rows[:count]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def classification_datasets(out: Path, train_rows: int, test_rows: int) -> dict[str, tuple[Path, Path]]:
    """name -> (train file, test file) of text + label rows, written under out/data."""
    found: dict[str, tuple[Path, Path]] = {}
    banking = SHARED / "banking77"
    if banking.is_dir():
        def read(name):
            with (banking / name).open(encoding="utf-8") as handle:
                return [{"text": r["text"], "label": r["category"]} for r in csv.DictReader(handle)]
        data = out / "data"
        train = sample(read("train.csv"), train_rows, 1)
        seen = {row["label"] for row in train}  # a small sample misses a few of the 77 intents: test only on seen ones
        test = sample([row for row in read("test.csv") if row["label"] in seen], test_rows, 2)
        found["banking77"] = (write_jsonl(data / "banking77-train.jsonl", train),
                              write_jsonl(data / "banking77-test.jsonl", test))
    else:
        print(f"skipping banking77: {banking} is absent", file=sys.stderr)
    sst2 = SHARED / "sst2"
    if sst2.is_dir():
        def read_tsv(name):
            with (sst2 / name).open(encoding="utf-8") as handle:
                return [{"text": r["sentence"].strip(), "label": "positive" if r["label"] == "1" else "negative"}
                        for r in csv.DictReader(handle, delimiter="\t")]
        found["sst2"] = (write_jsonl(out / "data" / "sst2-train.jsonl", sample(read_tsv("train.tsv"), train_rows, 1)),
                         write_jsonl(out / "data" / "sst2-test.jsonl", sample(read_tsv("dev.tsv"), test_rows, 2)))
    else:
        print(f"skipping sst2: {sst2} is absent", file=sys.stderr)
    from tuneloop.demos.quickstart import write_demo_data

    brambleway = out / "data" / "brambleway"
    write_demo_data(brambleway)

    def topics(name):
        rows = [json.loads(line) for line in (brambleway / name).read_text(encoding="utf-8").splitlines()]
        return [{"text": next(m["content"] for m in r["messages"] if m["role"] == "user"), "label": r["topic"]}
                for r in rows]
    found["brambleway-topics"] = (write_jsonl(out / "data" / "topics-train.jsonl", topics("train.jsonl")),
                                  write_jsonl(out / "data" / "topics-test.jsonl", topics("test.jsonl")))
    return found


def base_config(train_file: Path, output_dir: Path) -> dict:
    """The minimal config: a model and data files, plus what only speeds the benchmark up (no tracking, no slow
    audit checks). No train.* key: the defaults table fills them."""
    return {"output_dir": str(output_dir), "model": {"name": "minilm-l6"},
            "data": {"train_file": str(train_file), "format": "classification", "max_length": 64,
                     "audit": {"checks": ["duplicates", "leakage", "labels"]}},
            "evaluate": {"batch_size": 64}, "tracking": {"backend": "none"}}


def run_dataset(name: str, files: tuple[Path, Path], out: Path, trials: int, quiet, search: bool = True) -> dict:
    """The grid on one dataset, then (with search) the search; returns what was measured."""
    import optuna

    from tuneloop.config.search_space import parse_space
    from tuneloop.tune.finish import score_on_test
    from tuneloop.tune.objective import record_trial, run_trial_config, trial_config
    from tuneloop.tune.space import suggest
    from tuneloop.workspace import RunDir, read_json

    root = out / name
    base = base_config(files[0], root)
    params, _ = parse_space(CLASSIFY_SPACE)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = f"sqlite:///{(root / 'study.db').resolve()}"
    root.mkdir(parents=True, exist_ok=True)

    def train(values: dict, run_dir: Path) -> tuple[float, float]:
        done = run_dir / "trial.json"
        if done.is_file() and read_json(done).get("state") == "complete":
            return read_json(done)["value"], read_json(done)["seconds"]
        started = time.perf_counter()
        outcome = run_trial_config(trial_config(base, values, run_dir), "accuracy", None, quiet)
        seconds = round(time.perf_counter() - started, 1)
        record_trial(run_dir, -1, values, "complete", outcome.value, steps=outcome.steps, seconds=seconds)
        return outcome.value, seconds

    grid = []
    for index, values in enumerate(CLASSIFY_GRID):
        value, seconds = train(values, root / "grid" / f"{index}")
        grid.append({"candidate": index, "values": values, "validation": value, "seconds": seconds})
        print(f"{name}: candidate {index} {values or '(minimal config)'}: validation accuracy {value:.4f} "
              f"({seconds:.0f} s)", flush=True)

    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                sampler=optuna.samplers.TPESampler(seed=42, n_startup_trials=len(CLASSIFY_GRID)))
    if not study.trials:  # the search starts from the grid's points (their results are known already)
        for candidate in grid[1:]:
            study.add_trial(optuna.trial.create_trial(
                params=candidate["values"],
                distributions={p.key: _distribution(p) for p in params if p.key in candidate["values"]},
                value=candidate["validation"]))

    def objective(trial) -> float:
        values = suggest(trial, params)
        value, _ = train(values, root / "search" / f"{trial.number:04d}")
        print(f"{name}: search trial {trial.number} {values}: {value:.4f}", flush=True)
        return value

    remaining = trials - len([t for t in study.trials if t.state.name == "COMPLETE"])
    if remaining > 0 and search:
        study.optimize(objective, n_trials=remaining)
    best = study.best_trial
    winner_dir = next((root / "grid" / str(c["candidate"]) for c in grid[1:] if c["values"] == best.params),
                      root / "search" / f"{best.number:04d}")

    def test_score(run_dir: Path) -> float:
        cached = run_dir / "test_accuracy.json"
        if cached.is_file():
            return read_json(cached)["accuracy"]
        results = score_on_test(RunDir(run_dir), str(files[1]), False, quiet)
        value = float(results["tuned"]["accuracy"])
        cached.write_text(json.dumps({"accuracy": value}), encoding="utf-8")
        return value

    for candidate in grid:
        candidate["test"] = test_score(root / "grid" / str(candidate["candidate"]))
    minimal_defaults = read_json(root / "grid" / "0" / "defaults.json")
    return {"dataset": name, "grid": grid, "search_best": {"trial": best.number, "params": best.params,
            "validation": best.value, "test": test_score(winner_dir)}, "minimal_config_defaults": minimal_defaults,
            "search_trials": len(study.trials)}


def _distribution(param):
    import optuna

    if param.kind == "choice":
        return optuna.distributions.CategoricalDistribution(list(param.choices))
    if param.kind == "int":
        return optuna.distributions.IntDistribution(param.low, param.high)
    return optuna.distributions.FloatDistribution(param.low, param.high, log=param.kind == "log_uniform")


def leave_one_out(results: list[dict]) -> list[dict]:
    """For each dataset, the grid candidate best on the others (validation, as a share of each one's best)."""
    rows = []
    for held in results:
        others = [r for r in results if r is not held]
        shares = {}
        for index in range(len(CLASSIFY_GRID)):
            shares[index] = statistics.fmean(r["grid"][index]["validation"] / max(r["search_best"]["validation"], 1e-9)
                                             for r in others) if others else 0.0
        chosen = max(shares, key=shares.get)
        best = held["search_best"]["test"]
        rows.append({"dataset": held["dataset"], "chosen_without_it": chosen,
                     "chosen_test": held["grid"][chosen]["test"], "minimal_test": held["grid"][0]["test"],
                     "search_best_test": best, "minimal_ratio": held["grid"][0]["test"] / best if best else None,
                     "chosen_ratio": held["grid"][chosen]["test"] / best if best else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["classify"], default="classify")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--train-rows", type=int, default=1000)
    parser.add_argument("--test-rows", type=int, default=600)
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "defaults-sweep")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()
    out = args.out / args.part
    quiet = print if args.verbose else (lambda *_a, **_k: None)
    datasets = classification_datasets(out, args.train_rows, args.test_rows)
    started = time.perf_counter()
    # The grid on every dataset first (enough for the leave-one-out choice), then the searches.
    for name, files in datasets.items():
        run_dataset(name, files, out, args.trials, quiet, search=False)
    results = [run_dataset(name, files, out, args.trials, quiet) for name, files in datasets.items()]
    table = leave_one_out(results)
    summary = {"part": args.part, "trials": args.trials, "datasets": results, "leave_one_out": table,
               "wall_seconds": round(time.perf_counter() - started, 1)}
    (out / "results.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    print("dataset | minimal config (test) | 20-trial search best (test) | ratio | chosen without it (test)")
    for row in table:
        print(f"{row['dataset']} | {row['minimal_test']:.3f} | {row['search_best_test']:.3f} | "
              f"{row['minimal_ratio']:.2f} | candidate {row['chosen_without_it']} {row['chosen_test']:.3f}")
    print(json.dumps({"part": args.part, "min_minimal_ratio": min(r["minimal_ratio"] for r in table)}))


if __name__ == "__main__":
    main()
