"""Forgetting benchmark: the same run plain and with each train.guard switch, in one table.

The scenario (benchmarks/forgetting.yaml) forgets on purpose: FULL fine-tuning of smollm2-135m-instruct
for several epochs on the Brambleway demo facts at a high learning rate. Each variant is an ordinary
`tuneloop run` in its own run directory under --out (a finished one is not run again, so variants can
be run one at a time and the table printed at the end). The table gives, per variant:

    task      held-out contains-answer (60 paraphrased questions) with its 95% interval
    ARC       ARC-Easy dev accuracy change, tuned - base, on the questions scored, McNemar p
    KL        per-token KL(tuned || base) on general text (evaluate.drift_texts), 95% interval over documents
    time      training seconds (the guard's own work included) and wall seconds of the whole run

Usage (from the repository root; write the data first with `python -m tuneloop.demos.quickstart /tmp/forgetting-data`):
    python benchmarks/forgetting.py                     # every variant, then the table
    python benchmarks/forgetting.py --only plain kl     # some variants
    python benchmarks/forgetting.py --table             # only print the table of what has finished
Writes OUT/results.json, OUT/results.md and OUT/compare.html (task vs forgetting plot).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

# Each variant: the --set overrides on top of the scenario config.
VARIANTS: dict[str, list[str]] = {
    "plain": [],
    "replay_self": ["train.guard.replay={self: 100, ratio: 0.2}"],
    "self_distill": ["train.guard.self_distill=true"],
    "kl_to_base": ["train.guard.kl_to_base=1.0"],
    "interpolate_auto": ["train.guard.interpolate=auto"],
    "interpolate_0.5": ["train.guard.interpolate=0.5"],
    "freeze_20": ["train.guard.freeze_layers=20"],
}


def run_variant(name: str, config: Path, out: Path, extra: list[str]) -> None:
    target = out / name
    if (target / "metrics.json").is_file():
        print(f"{name}: already finished in {target}")
        return
    command = [sys.executable, "-m", "tuneloop.cli", "run", str(config), "--overwrite",
               "--set", f"output_dir={target}"]
    # The base model's scores are the same in every variant: plain measures them once (the table pairs each
    # variant's ARC answers with plain's baseline answers, question by question).
    baseline = [] if name == "plain" else ["evaluate.baseline=false"]
    for item in VARIANTS[name] + baseline + extra:
        command += ["--set", item]
    print(f"{name}: {' '.join(command)}", flush=True)
    started = time.perf_counter()
    with open(out / f"{name}.log", "w", encoding="utf-8") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    (target / "wall_seconds.json").write_text(json.dumps({"wall_seconds": round(wall, 1), "exit": code}))
    print(f"{name}: exit {code} after {wall:.0f} s (log {out / f'{name}.log'})", flush=True)


def variant_row(name: str, target: Path, base: dict | None) -> dict | None:
    """One table row; base is plain's forgetting entry (its baseline answers pair with this variant's)."""
    from tuneloop.evaluate.stats import compare

    metrics_path = target / "metrics.json"
    if not metrics_path.is_file():
        return None
    metrics = json.loads(metrics_path.read_text())
    summary = json.loads((target / "train_summary.json").read_text())
    wall = json.loads((target / "wall_seconds.json").read_text()) if (target / "wall_seconds.json").is_file() else {}
    forgetting = next(iter(metrics.get("forgetting", {}).values()), None)
    if forgetting and base and "correct" in base.get("baseline", {}):
        before, after = base["baseline"]["correct"], forgetting["tuned"]["correct"]
        change = forgetting["tuned"]["acc"] - base["baseline"]["acc"]
        forgetting = dict(forgetting, baseline=base["baseline"], change=change,
                          test=compare([float(c) for c in before], [float(c) for c in after], binary=True))
    interval = metrics.get("intervals", {}).get("tuned", {}).get("contains_answer", [None, None])
    guard = metrics.get("guard", {})
    return {
        "variant": name,
        "task": metrics["tuned"].get("contains_answer"), "task_interval": interval,
        "task_baseline": metrics.get("baseline", {}).get("contains_answer"),
        "arc_base": forgetting and forgetting["baseline"]["acc"],
        "arc_tuned": forgetting and forgetting["tuned"]["acc"],
        "arc_change": forgetting and forgetting["change"], "arc_n": forgetting and forgetting["n"],
        "arc_p": forgetting and forgetting.get("test", {}).get("p_value"),
        "kl": metrics.get("drift", {}).get("kl_per_token"), "kl_interval": metrics.get("drift", {}).get("interval"),
        "general_perplexity": metrics["tuned"].get("general_perplexity"),
        "alpha": guard.get("interpolate", {}).get("alpha"),
        "train_seconds": summary.get("seconds"), "wall_seconds": wall.get("wall_seconds"),
        "guard": guard,
    }


# Questions the table's ARC column (the first forgetting_limit) and interpolate: auto (the next 100) do not use.
REST_START = 400


def rest_of_the_file(out: Path, config: Path) -> dict:
    """Base and every finished variant on the forgetting file's questions from REST_START on: a second, independent
    paired test (no variant chose anything on them). Cached per model in OUT/rest.json."""
    from tuneloop.config.load import load_config
    from tuneloop.evaluate.stats import compare
    from tuneloop.models.device import pick_dtype
    from tuneloop.models.load import load_generator, load_tokenizer
    from tuneloop.models.multiple_choice import load_questions, score_multiple_choice
    from tuneloop.models.registry import resolve_model

    loaded = load_config(config)
    questions = load_questions(loaded.evaluate.forgetting[0], loaded.evaluate.forgetting_format)[REST_START:]
    cache = out / "rest.json"
    found = json.loads(cache.read_text()) if cache.is_file() else {}
    dtype = pick_dtype("cpu", "auto")  # as the evaluate stage scores on this machine
    models = {"base": resolve_model(loaded.model.name)}
    models |= {name: str(out / name / "model") for name in VARIANTS if (out / name / "metrics.json").is_file()}
    for name, path in models.items():
        if name in found:
            continue
        model = load_generator(path, dtype, "cpu")
        scored = score_multiple_choice(model, load_tokenizer(path), questions, loaded.evaluate.batch_size)
        found[name] = {"acc": scored["acc"], "correct": [int(c) for c in scored["correct"]]}
        del model
        cache.write_text(json.dumps(found))
    base = [float(c) for c in found["base"]["correct"]]
    for name, entry in found.items():
        if name != "base":
            entry["change"] = entry["acc"] - found["base"]["acc"]
            entry["p_value"] = compare(base, [float(c) for c in entry["correct"]], binary=True)["p_value"]
    cache.write_text(json.dumps(found))
    return {"first_question": REST_START + 1, "questions": len(questions), "models": found}


def markdown_table(rows: list[dict], rest: dict | None = None) -> str:
    """The table; rest (OUT/rest.json) adds the second ARC test, on the questions from REST_START + 1 on."""
    plain = next((row for row in rows if row["variant"] == "plain"), None)
    rest_head = f" ARC-Easy {REST_START + 1}+ change, p |" if rest else ""
    lines = ["| variant | task: contains-answer [95% CI] | ARC-Easy 1-300 change (base→tuned), McNemar p |"
             + rest_head + " KL(tuned‖base) nats/token [95% CI] | general-text perplexity | train s | wall s |",
             "|---|---|---|" + ("---|" if rest else "") + "---|---|---|---|"]
    for row in rows:
        low, high = row["task_interval"] or (None, None)
        task = f"{row['task']:.1f} [{low:.1f}, {high:.1f}]" if low is not None else f"{row['task']:.1f}"
        arc = (f"{row['arc_change']:+.1f} ({row['arc_base']:.1f}→{row['arc_tuned']:.1f}, n={row['arc_n']}), "
               f"p={row['arc_p']:.3f}" if row["arc_change"] is not None else "–")
        kl = (f"{row['kl']:.4f} [{row['kl_interval'][0]:.4f}, {row['kl_interval'][1]:.4f}]"
              if row["kl"] is not None else "–")
        if plain and row is not plain and plain["kl"] and row["kl"] is not None:
            kl += f" ({row['kl'] / plain['kl']:.2f}x plain)"
        name = row["variant"] + (f" (α={row['alpha']:g})" if row["alpha"] is not None else "")
        if rest:
            entry = rest.get(row["variant"])
            arc += (f" | {entry['change']:+.1f} ({rest['base']['acc']:.1f}→{entry['acc']:.1f}), "
                    f"p={entry['p_value']:.3f}" if entry and "change" in entry else " | –")
        perplexity = f"{row['general_perplexity']:.1f}" if row["general_perplexity"] is not None else "–"
        lines.append(f"| {name} | {task} | {arc} | {kl} | {perplexity} | {row['train_seconds']:.0f} | "
                     f"{row['wall_seconds'] or 0:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=Path("benchmarks/forgetting.yaml"))
    parser.add_argument("--out", type=Path, default=Path("runs/forgetting"))
    parser.add_argument("--only", nargs="*", choices=list(VARIANTS), help="variants to run (default: all)")
    parser.add_argument("--table", action="store_true", help="print the table of finished variants; run nothing")
    parser.add_argument("--rest", action="store_true", help=f"score base and the finished variants on the "
                        f"forgetting questions from {REST_START + 1} on (a second paired test); run nothing else")
    parser.add_argument("--set", dest="extra", action="append", default=[], help="an override for every variant")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    names = args.only or list(VARIANTS)
    if args.rest:
        found = rest_of_the_file(args.out, args.config)
        last = found["first_question"] + found["questions"] - 1
        for name, entry in found["models"].items():
            detail = f" ({entry['change']:+.1f}, McNemar p={entry['p_value']:.4f})" if name != "base" else ""
            print(f"ARC-Easy questions {found['first_question']}-{last}: {name} {entry['acc']:.1f}{detail}")
        return 0
    if not args.table:
        for name in names:
            run_variant(name, args.config, args.out, args.extra)
    plain_metrics = args.out / "plain" / "metrics.json"
    base = (next(iter(json.loads(plain_metrics.read_text()).get("forgetting", {}).values()), None)
            if plain_metrics.is_file() else None)
    rows = [row for name in VARIANTS if (row := variant_row(name, args.out / name, base))]
    rest = json.loads((args.out / "rest.json").read_text()) if (args.out / "rest.json").is_file() else None
    table = markdown_table(rows, rest)
    print(table)
    (args.out / "results.md").write_text(table + "\n", encoding="utf-8")
    (args.out / "results.json").write_text(json.dumps(rows, indent=2), encoding="utf-8")
    if len(rows) >= 2:
        from tuneloop.report.compare import compare_runs

        compare_runs([args.out / row["variant"] for row in rows], args.out / "compare.html")
        print(f"plot: {args.out / 'compare.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
