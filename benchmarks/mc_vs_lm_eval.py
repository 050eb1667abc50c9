"""Agreement of tuneloop's multiple-choice harness with EleutherAI's lm-evaluation-harness, same model, same run.

Scores one model on ARC-Easy (dev, 570 questions, a local jsonl) with `tuneloop.evaluate.bench.bench`
and with `lm_eval.simple_evaluate` through a custom task equal to lm-eval's `arc_easy` (same prompt, choices and
target) that reads the local file. Both run on CPU in fp32, offline. Prints one JSON line per tool (acc, acc_norm,
n, seconds: model load included), then the differences in points; exits 1 when |diff| > 0.5 for acc or acc_norm.

Needs lm-eval (`pip install lm-eval`, or the `bench` extra); installs nothing itself.

    .venv/bin/python benchmarks/mc_vs_lm_eval.py [--limit 50] [--model smollm2-135m-instruct]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tuneloop.evaluate.bench import bench  # noqa: E402
from tuneloop.models.registry import resolve_model  # noqa: E402

DEFAULT_FILE = "/work/shared/datasets/arc-easy-dev/ARC-Easy-Dev.jsonl"
TASK_NAME = "tuneloop_arc_easy_local"
TOLERANCE_POINTS = 0.5

# lm-eval's arc_easy.yaml reads HF ai2_arc (question: str, choices: {text, label}); AI2's jsonl nests both
# under `question`, so the templates reach one level deeper and otherwise say the same.
TASK_YAML = """\
task: {task}
dataset_path: json
dataset_kwargs:
  data_files:
    validation: {file}
output_type: multiple_choice
validation_split: validation
doc_to_text: "Question: {{{{question.stem}}}}\\nAnswer:"
doc_to_choice: "{{{{question.choices | map(attribute='text') | list}}}}"
doc_to_target: "{{{{(question.choices | map(attribute='label') | list).index(answerKey)}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def score_with_tuneloop(model: str, file: str, limit: int | None, batch_size: int) -> dict:
    result = bench(model, file, fmt="arc", limit=limit, batch_size=batch_size, device="cpu", dtype="fp32")
    return {"tool": "tuneloop", **{key: result[key] for key in ("acc", "acc_norm", "n", "seconds")}}


def score_with_lm_eval(model_dir: str, file: str, limit: int | None, batch_size: int) -> dict:
    import lm_eval
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as task_dir:
        task_yaml = Path(task_dir) / f"{TASK_NAME}.yaml"
        task_yaml.write_text(TASK_YAML.format(task=TASK_NAME, file=json.dumps(str(Path(file).resolve()))))
        started = time.perf_counter()
        output = lm_eval.simple_evaluate(
            model="hf",
            model_args=f"pretrained={model_dir},dtype=float32",
            tasks=[TASK_NAME],
            task_manager=TaskManager(include_path=task_dir),
            batch_size=batch_size,
            device="cpu",
            limit=limit,
        )
        seconds = time.perf_counter() - started
    metrics = output["results"][TASK_NAME]
    return {
        "tool": "lm-eval",
        "version": metadata.version("lm_eval"),
        "acc": 100.0 * metrics["acc,none"],
        "acc_norm": 100.0 * metrics["acc_norm,none"],
        "n": output["n-samples"][TASK_NAME]["effective"],
        "seconds": round(seconds, 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct", help="registry name or HF model directory")
    parser.add_argument("--file", default=DEFAULT_FILE, help="ARC jsonl (AI2's release format)")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N questions")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    model_dir = resolve_model(args.model)
    ours = score_with_tuneloop(model_dir, args.file, args.limit, args.batch_size)
    print(json.dumps(ours), flush=True)
    theirs = score_with_lm_eval(model_dir, args.file, args.limit, args.batch_size)
    print(json.dumps(theirs), flush=True)

    differences = {key: round(ours[key] - theirs[key], 4) for key in ("acc", "acc_norm")}
    agree = ours["n"] == theirs["n"] and all(abs(d) <= TOLERANCE_POINTS for d in differences.values())
    summary = {
        "diff_points": differences,
        "tolerance_points": TOLERANCE_POINTS,
        "agree": agree,
        "time_ratio_tuneloop_over_lm_eval": round(ours["seconds"] / theirs["seconds"], 3),
    }
    print(json.dumps(summary))
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
