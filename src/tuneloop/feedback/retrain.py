"""Retrain a served run on its users' feedback, then gate the new run against the one in service.

`retrain` reads an exported feedback directory (tuneloop.feedback.export), and:
1. holds out a seeded share of the feedback prompts (near-duplicate clusters kept on one side) as the gate's
   feedback slice, never trained on;
2. for sft, rewords the question of each training correction `paraphrases` times with the served base model
   (tuneloop.feedback.paraphrase; the reply stays the correction), so the fact is learned, not one sentence;
   paraphrase.json in the run's feedback/ directory counts what was kept and dropped;
3. mixes the feedback rows with a replay sample of the served run's own training rows (`replay_ratio` replay
   rows per feedback row, paraphrases included), so what the model knew is rehearsed while it learns the
   corrections;
4. writes a new run config from the served run's: the same base and settings, training continuing from the
   served weights (its LoRA adapter through model.adapter, or its full model), and the served run's frozen
   validation and test splits — the same held-out set, so the comparison is fair;
5. runs it like any run (audit, train, evaluate, report);
6. scores the served and the new model on the frozen test set, the forgetting files and the feedback slice,
   and writes promotion.json with the gate's decision (tuneloop.feedback.gate).
train_candidate does steps 1-5 and gate_candidate step 6, so the loop can save its state between them.

Recipes: sft trains on corrections (plus replay); dpo on preference pairs (correction over the rejected
reply, pairwise picks); kto on thumbs up/down. auto picks sft when there are corrections, else dpo when there
are pairs, else kto.
"""

from __future__ import annotations

import copy
import gc
import random
from pathlib import Path

import yaml

from tuneloop.data.text_generator import TextGenerator
from tuneloop.errors import ModelError, TuneloopError
from tuneloop.feedback.gate import GateCheck, GateRule, decide
from tuneloop.workspace import RunDir, open_run_dir, read_json, read_jsonl, write_json, write_jsonl

RECIPES = ("auto", "sft", "dpo", "kto")
# Which exported file each recipe trains on, and the data format it is read as.
RECIPE_FILES = {"sft": ("sft.jsonl", "auto"), "dpo": ("preference.jsonl", "preference"),
                "kto": ("kto.jsonl", "unpaired")}
PROMOTION_FILE = "promotion.json"
GATE_SCORES_FILE = "gate_scores.json"  # in a served run: its frozen-set scores from the last gate
RETRAIN_FILE = "retrain.json"  # in the run's feedback/ directory: the recipe and data counts the gate reports
PARAPHRASE_FILE = "paraphrase.json"  # in the run's feedback/ directory: what paraphrasing kept and dropped
# Four rewordings per correction: enough that the model learns the fact rather than one sentence, at five times
# the feedback rows (and, through replay_ratio, the replay rows) to train on.
DEFAULT_PARAPHRASES = 4


def choose_recipe(recipe: str, export_dir: Path) -> str:
    """The recipe for this feedback: the one asked for, or for auto the strongest signal present."""
    if recipe not in RECIPES:
        raise TuneloopError(f"--recipe {recipe!r}: choose one of {', '.join(RECIPES)}.")
    counts = {name: _count_rows(export_dir / file) for name, (file, _) in RECIPE_FILES.items()}
    if recipe == "auto":
        recipe = next((name for name in ("sft", "dpo", "kto") if counts[name]), None)
        if recipe is None:
            raise TuneloopError(f"{export_dir}: the export holds no corrections, pairs or ratings to train on; "
                                "collect feedback first (POST /v1/feedback on `tuneloop serve`).")
    elif not counts[recipe]:
        raise TuneloopError(f"--recipe {recipe}: {export_dir / RECIPE_FILES[recipe][0]} has no rows. "
                            f"Rows per file: {counts}. Choose a recipe whose file has rows, or --recipe auto.")
    return recipe


def split_feedback(rows: list[dict], holdout: float, seed: int) -> tuple[list[dict], list[dict]]:
    """(train, held-out slice) of feedback rows; near-copies of one prompt stay on one side."""
    from tuneloop.data.split import split_rows
    from tuneloop.feedback.export import user_text

    if holdout <= 0 or len(rows) < 2:
        return rows, []
    texts = [user_text(_prompt_messages(row)) for row in rows]
    train_index, test_index = split_rows(texts, holdout, seed=seed)
    return [rows[i] for i in train_index], [rows[i] for i in test_index]


def replay_sample(served: RunDir, count: int, seed: int) -> list[dict]:
    """A seeded sample of the served run's own training rows (all of them when fewer)."""
    rows = read_jsonl(served.split("train")) if served.split("train").is_file() else []
    rng = random.Random(seed)
    return rng.sample(rows, min(count, len(rows)))


def prepare_data(served: RunDir, export_dir: Path, out: Path, recipe: str, replay_ratio: float, holdout: float,
                 seed: int, paraphrases: int = 0, generator: TextGenerator | None = None,
                 console_print=print) -> dict:
    """Write the new run's training file and the feedback slice into out/feedback/; return paths and counts.

    With `paraphrases` (sft only), `generator` rewords the training corrections' questions; None builds a local
    generator on the served run's base model.
    """
    file, data_format = RECIPE_FILES[recipe]
    rows = read_jsonl(export_dir / file)
    rows, validation_copies = drop_validation_copies(rows, served)
    train_rows, holdout_rows = split_feedback(rows, holdout, seed)
    if not train_rows:
        raise TuneloopError(f"{export_dir / file}: all {len(rows)} feedback row(s) are near-copies of one prompt and "
                            "went to the held-out slice; collect feedback on more prompts, or lower --holdout.")
    target = out / "feedback"
    copies, paraphrased = [], None
    if recipe == "sft":
        # After the split, from the training part only: the held-out slice stays in the users' own words.
        copies, paraphrased = paraphrase_training_rows(served, train_rows, holdout_rows, paraphrases, generator,
                                                       console_print)
        write_json(target / PARAPHRASE_FILE, paraphrased)
    feedback_rows = train_rows + [row for _, row in copies]
    replay = replay_sample(served, round(replay_ratio * len(feedback_rows)), seed) if recipe == "sft" else []
    mixed = feedback_rows + replay
    random.Random(seed).shuffle(mixed)
    position = {id(row): number for number, row in enumerate(mixed, start=1)}
    for index, row in copies:  # source_row is the original's place in the file, as tuneloop.data.augment writes
        row["augmented"]["source_row"] = position[id(train_rows[index])]
    paths = {"train": target / "train.jsonl", "holdout": target / "holdout.jsonl"}
    write_jsonl(paths["train"], mixed)
    write_jsonl(paths["holdout"], holdout_rows)
    return {"paths": paths, "format": data_format, "feedback_rows": len(rows), "train_feedback": len(train_rows),
            "paraphrased": len(copies), "holdout": len(holdout_rows), "replay": len(replay),
            "validation_copies": validation_copies, "paraphrase": paraphrased}


def paraphrase_training_rows(served: RunDir, train_rows: list[dict], holdout_rows: list[dict], count: int,
                             generator: TextGenerator | None, console_print=print) -> tuple[list, dict]:
    """(source index, copy) per kept paraphrase of the training corrections, and the counts for paraphrase.json.

    No copy may copy a held-out feedback prompt or a frozen validation or test prompt of the served run.
    A base model that cannot paraphrase (no chat template) is said and recorded, and retraining goes on without.
    """
    from tuneloop.config.load import load_run_config
    from tuneloop.feedback.export import user_text
    from tuneloop.feedback.paraphrase import describe, local_paraphraser, paraphrase_corrections

    off = {"rows": len(train_rows), "per_row": count, "asked": 0, "kept": 0, "dropped": {}}
    if count <= 0:
        return [], {**off, "skipped": "paraphrases is 0"}
    protected = [user_text(_prompt_messages(row)) for row in holdout_rows]
    for split in ("validation", "test"):
        if served.split(split).is_file():
            protected += [user_text(row["messages"]) for row in read_jsonl(served.split(split)) if row.get("messages")]
    if generator is None:
        config = load_run_config(served)
        generator = local_paraphraser(config.model.name, config.model.device, train_rows, config.evaluate.batch_size)
    try:
        copies, counts = paraphrase_corrections(train_rows, count, generator, protected)
    except ModelError as exc:
        console_print(f"retrain: no paraphrases: {exc}")
        return [], {**off, "skipped": str(exc)}
    finally:
        del generator  # a local model is not needed again: free it before training starts
        gc.collect()
    console_print(describe(counts))
    return copies, counts


def drop_validation_copies(rows: list[dict], served: RunDir) -> tuple[list[dict], int]:
    """The feedback rows whose prompt is not one of the served run's validation prompts, and how many were.

    The new run validates (and stops early) on the served run's validation split; feedback on those very
    prompts would let it score its own training rows there. Export already drops copies of the test set.
    """
    from tuneloop.data.dedup import normalize_text
    from tuneloop.feedback.export import user_text

    validation = served.split("validation")
    if not validation.is_file():
        return rows, 0
    taken = {normalize_text(user_text(_prompt_messages(row))) for row in read_jsonl(validation)}
    kept = [row for row in rows if normalize_text(user_text(_prompt_messages(row))) not in taken]
    return kept, len(rows) - len(kept)


def retrain_config(served: RunDir, data: dict, out: Path, recipe: str, overrides: list[str] | None = None) -> dict:
    """The new run's raw config: the served run's, training on the feedback from the served weights."""
    from tuneloop.config.load import apply_override

    raw = copy.deepcopy(yaml.safe_load(served.config.read_text(encoding="utf-8")) or {})
    raw["output_dir"] = str(out)
    weights = served.trained_weights()
    if weights is None:
        raise TuneloopError(f"{served.root}: the served run has no trained weights to continue from.")
    model = raw.setdefault("model", {})
    if weights == served.adapter:
        model["adapter"] = str(weights.resolve())
    else:
        model["name"] = str(weights.resolve())
        model.pop("adapter", None)
    frozen_test, frozen_validation = frozen_splits(served)
    if recipe == "sft":
        # The served run's frozen validation and test splits: the same held-out set, so the comparison is fair.
        validation, test = frozen_validation, frozen_test
    else:
        # Preference rows cannot be validated or tested on chat rows: the run validates on a share of its own
        # feedback pairs and is evaluated (held-out pair accuracy) on the gate's slice; the gate still scores
        # the frozen chat test set itself.
        validation, test = None, data["paths"]["holdout"] if data["holdout"] else None
    raw["data"] = {**raw.get("data", {}),
                   "train_file": str(data["paths"]["train"]),
                   "validation_file": str(Path(validation).resolve()) if validation else None,
                   "test_file": str(Path(test).resolve()) if test else None,
                   "test_size": None, "format": data["format"], "max_train_examples": None}
    train = raw.setdefault("train", {})
    train["preset"] = "none"  # a few dozen feedback rows must not switch on the few-shot cross-validation
    if recipe != "sft":
        train["recipe"] = recipe
    for item in overrides or []:
        apply_override(raw, item)
    return raw


def frozen_splits(served: RunDir) -> tuple[Path | None, Path | None]:
    """(test, validation) chat files of the original run behind served: what every gate and SFT cycle holds fixed.

    A served run made by retrain names them in its feedback/retrain.json (a DPO or KTO cycle's own splits are
    preference rows); any other run's are its own splits.
    """
    made = served.root / "feedback" / RETRAIN_FILE
    if made.is_file():
        found = read_json(made)
        if "frozen_test" in found:
            return (Path(found["frozen_test"]) if found["frozen_test"] else None,
                    Path(found["frozen_validation"]) if found["frozen_validation"] else None)
    test, validation = served.split("test"), served.split("validation")
    return (test.resolve() if test.is_file() else None, validation.resolve() if validation.is_file() else None)


def slice_chat_rows(holdout_rows: list[dict]) -> list[dict]:
    """The held-out feedback as chat rows whose reply is the one users wanted: corrections as they are, the
    preferred reply of a pair, a desirable KTO completion (an undesirable one says nothing about what to answer)."""
    rows = []
    for row in holdout_rows:
        if "completion" in row:
            if row.get("label"):
                rows.append({"messages": list(row["messages"]) + [{"role": "assistant", "content": row["completion"]}]})
        elif "chosen" in row:
            prompt = row["prompt"] if isinstance(row["prompt"], list) else [{"role": "user", "content": row["prompt"]}]
            rows.append({"messages": list(prompt) + [{"role": "assistant", "content": row["chosen"]}]})
        elif row.get("messages"):
            rows.append(row)
    return rows


def gate_checks(served: RunDir, candidate: RunDir, holdout_rows: list[dict], console_print=print) -> list[GateCheck]:
    """Score both models on the same rows: frozen test set, forgetting files, feedback slice.

    The served model's frozen-set and forgetting scores are kept in its run directory (GATE_SCORES_FILE), keyed
    by those rows, the settings that score them and the served weights, so a loop whose candidates keep being
    rejected does not score the same served model on the same frozen set every cycle. The feedback slice is new
    each cycle and always scored.
    """
    from tuneloop.config.load import load_run_config

    config = load_run_config(candidate)
    frozen_test, _ = frozen_splits(served)
    frozen_rows = read_jsonl(frozen_test) if frozen_test and frozen_test.is_file() else []
    frozen_rows = [row for row in frozen_rows if row.get("messages")][: config.evaluate.max_samples]
    frozen_metric = "contains_answer" if frozen_rows and all(row.get("answer") for row in frozen_rows) else "rouge_l"
    slice_rows = slice_chat_rows(holdout_rows)
    key = _frozen_key(served, config, frozen_rows, frozen_metric)
    cached = _cached_scores(served, key)
    if cached is not None:
        console_print(f"gate: the served model's frozen-set and forgetting scores are those of an earlier gate "
                      f"(same rows, settings and weights; {served.root / GATE_SCORES_FILE})")
    scores = {"served": _score_model(served, config, frozen_rows, frozen_metric, slice_rows, console_print, "served",
                                     guarded=cached is None),
              "candidate": _score_model(candidate, config, frozen_rows, frozen_metric, slice_rows, console_print,
                                        "candidate")}
    if cached is None:
        _store_scores(served, key, scores["served"], console_print)
    else:
        scores["served"].update(cached)
    checks = [GateCheck("frozen test set", "frozen", frozen_metric, scores["served"]["frozen"],
                        scores["candidate"]["frozen"])]
    for path in config.evaluate.forgetting:
        checks.append(GateCheck(f"forgetting: {Path(path).name}", "forgetting", "acc",
                                scores["served"]["forgetting"][path], scores["candidate"]["forgetting"][path]))
    checks.append(GateCheck("feedback slice", "feedback", "rouge_l", scores["served"]["slice"],
                            scores["candidate"]["slice"]))
    return checks


def _frozen_key(served: RunDir, config, frozen_rows: list[dict], frozen_metric: str) -> str:
    import hashlib
    import json

    from tuneloop.serve.local_engine import weights_version

    evaluate = config.evaluate
    weights = served.adapter if served.adapter.is_dir() else served.root / "model"
    payload = {"rows": frozen_rows, "metric": frozen_metric, "max_new_tokens": evaluate.max_new_tokens,
               "forgetting": [str(Path(path).resolve()) for path in evaluate.forgetting],
               "forgetting_format": evaluate.forgetting_format, "forgetting_limit": evaluate.forgetting_limit,
               "model": config.model.name, "dtype": config.model.dtype, "weights": weights_version(weights)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def _cached_scores(served: RunDir, key: str) -> dict | None:
    path = served.root / GATE_SCORES_FILE
    if not path.is_file():
        return None
    found = read_json(path)
    return {"frozen": found["frozen"], "forgetting": found["forgetting"]} if found.get("key") == key else None


def _store_scores(served: RunDir, key: str, scores: dict, console_print) -> None:
    try:
        write_json(served.root / GATE_SCORES_FILE, {"key": key, "frozen": scores["frozen"],
                                                    "forgetting": scores["forgetting"]})
    except OSError as exc:  # a read-only served run: the next gate scores it again
        console_print(f"gate: cannot keep the served model's scores in {served.root} ({exc}); the next gate scores "
                      "it again")


def _score_model(run: RunDir, config, frozen_rows, frozen_metric, slice_rows, console_print, label,
                 guarded: bool = True) -> dict:
    """Per-row scores of one model: the frozen set and forgetting files (unless not guarded), the feedback slice."""
    import torch

    from tuneloop.data.encode import render_prompt
    from tuneloop.evaluate.metrics import generation_scores
    from tuneloop.models.device import pick_device, pick_dtype
    from tuneloop.models.generate import generate_replies
    from tuneloop.models.load import load_tuned
    from tuneloop.models.multiple_choice import load_questions, score_multiple_choice
    from tuneloop.models.registry import resolve_model

    device = pick_device(config.model.device)
    dtype = pick_dtype(device, config.model.dtype)
    model, tokenizer = load_tuned(run, resolve_model(config.model.name, console_print), dtype, device)
    found: dict = {"forgetting": {}}
    sets = ([("frozen", frozen_rows, frozen_metric)] if guarded else []) + [("slice", slice_rows, "rouge_l")]
    try:
        for key, rows, metric in sets:
            prompts = [render_prompt(tokenizer, row["messages"]) for row in rows]
            replies = generate_replies(model, tokenizer, prompts, config.evaluate.max_new_tokens,
                                       config.evaluate.batch_size, desc=f"gate: {label} {key}") if prompts else []
            references = [row["messages"][-1]["content"] for row in rows]
            answers = [row.get("answer") or ref for row, ref in zip(rows, references, strict=True)]
            found[key] = generation_scores(replies, references, answers, [metric])[1].get(metric, [])
        for path in config.evaluate.forgetting if guarded else []:
            questions = load_questions(path, config.evaluate.forgetting_format, config.evaluate.forgetting_limit)
            correct = score_multiple_choice(model, tokenizer, questions, config.evaluate.batch_size)["correct"]
            found["forgetting"][path] = [100.0 * float(c) for c in correct]
    finally:
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()
    return found


def retrain(served_dir: Path, export_dir: Path, out: Path, recipe: str = "auto", replay_ratio: float = 1.0,
            holdout: float = 0.2, seed: int = 42, overrides: list[str] | None = None, rule: GateRule = GateRule(),
            overwrite: bool = False, console_print=print, paraphrases: int = DEFAULT_PARAPHRASES,
            generator: TextGenerator | None = None) -> dict:
    """Train the new run, gate it against the served one; returns the decision also in out/promotion.json.

    paraphrases: rewordings of each training correction's question (sft only; 0 turns it off), written by
    `generator`, by default a local generator on the served run's base model.
    """
    run = train_candidate(served_dir, export_dir, out, recipe, replay_ratio, holdout, seed, overrides, overwrite,
                          console_print, paraphrases, generator)
    return gate_candidate(served_dir, run.root, rule, console_print)


def train_candidate(served_dir: Path, export_dir: Path, out: Path, recipe: str = "auto", replay_ratio: float = 1.0,
                    holdout: float = 0.2, seed: int = 42, overrides: list[str] | None = None, overwrite: bool = False,
                    console_print=print, paraphrases: int = DEFAULT_PARAPHRASES,
                    generator: TextGenerator | None = None) -> RunDir:
    """The first half of retrain: prepare the feedback data and run the new run (no gate yet).

    The run's feedback/ directory gets the training and held-out rows and retrain.json (recipe and counts), all
    gate_candidate needs, so the gate can run later in another process (a resumed loop).
    """
    from tuneloop.config.load import validate_config
    from tuneloop.stages import run_all

    if paraphrases < 0:
        raise TuneloopError(f"--paraphrases {paraphrases}: give 0 (off) or a number of rewordings per correction.")
    served = open_run_dir(served_dir)
    recipe = choose_recipe(recipe, Path(export_dir))
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise TuneloopError(f"--out: {out} exists and is not empty; choose a new directory or pass --overwrite.")
    staging = out.parent / f".{out.name}-feedback"
    if overwrite:
        import shutil

        for stale in (out, staging):  # what an interrupted attempt left
            if stale.exists():
                shutil.rmtree(stale)
    out.mkdir(parents=True, exist_ok=True)
    data = prepare_data(served, Path(export_dir), staging, recipe, replay_ratio, holdout, seed, paraphrases,
                        generator, console_print)
    console_print(f"retrain: {recipe} on {data['train_feedback']} feedback row(s) + {data['paraphrased']} "
                  f"paraphrase(s) + {data['replay']} replay row(s) from {served.root}; {data['holdout']} held out "
                  "for the gate")
    if data["validation_copies"]:
        console_print(f"retrain: {data['validation_copies']} feedback row(s) dropped: their prompt is one of the "
                      f"served run's validation prompts, which the new run validates on")
    raw = retrain_config(served, data, out, recipe, overrides)
    config = validate_config(raw, f"retrain of {served.root}")
    out.rmdir()  # run_all creates the run directory itself and refuses a non-empty one
    run, _ = run_all(config, console_print=console_print)
    # The feedback files move inside the run directory: the run is self-contained.
    moved = run.root / "feedback"
    data["paths"]["train"].parent.rename(moved)
    frozen_test, frozen_validation = frozen_splits(served)
    write_json(moved / RETRAIN_FILE, {"served": str(served.root.resolve()), "recipe": recipe,
                                      "frozen_test": str(frozen_test) if frozen_test else None,
                                      "frozen_validation": str(frozen_validation) if frozen_validation else None,
                                      "data": {key: value for key, value in data.items() if key != "paths"}})
    return run


def gate_candidate(served_dir: Path, candidate_dir: Path, rule: GateRule = GateRule(), console_print=print) -> dict:
    """The second half of retrain: score both runs on the same rows, decide, write promotion.json last.

    promotion.json appears only once the whole gate has run (and atomically), so a gate cut short leaves no
    decision that `tuneloop promote` or the loop could act on.
    """
    served, run = open_run_dir(served_dir), open_run_dir(candidate_dir)
    feedback = run.root / "feedback"
    if not (feedback / RETRAIN_FILE).is_file():
        raise TuneloopError(f"{run.root}: no feedback/{RETRAIN_FILE}; the run was not made by `tuneloop retrain`, "
                            "or its training did not finish.")
    made = read_json(feedback / RETRAIN_FILE)
    (run.root / PROMOTION_FILE).unlink(missing_ok=True)
    holdout_rows = read_jsonl(feedback / "holdout.jsonl")
    decision = decide(gate_checks(served, run, holdout_rows, console_print), rule)
    decision.update(served=str(served.root.resolve()), candidate=str(run.root.resolve()), recipe=made["recipe"],
                    data=made["data"])
    write_json(run.root / PROMOTION_FILE, decision)
    return decision


def read_promotion(run_dir: Path) -> dict:
    path = Path(run_dir) / PROMOTION_FILE
    if not path.is_file():
        raise TuneloopError(f"{run_dir}: no {PROMOTION_FILE}; it is written by `tuneloop retrain`.")
    return read_json(path)


def _prompt_messages(row: dict) -> list[dict]:
    if "messages" in row:
        messages = row["messages"]
        return messages[:-1] if messages and messages[-1]["role"] == "assistant" else messages
    prompt = row.get("prompt")
    return prompt if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]


def _count_rows(path: Path) -> int:
    return sum(1 for line in path.read_text(encoding="utf-8").splitlines() if line.strip()) if path.is_file() else 0
