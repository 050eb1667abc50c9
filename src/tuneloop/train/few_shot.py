"""The few-shot preset: safer settings for tiny training sets, and k-fold cross-validation to pick the epochs.

With a few dozen rows the usual recipe settings overfit or underfit by luck, and a validation split of
a handful of rows is too noisy to stop on. When train.preset is few_shot (or auto and the training
split has fewer than FEW_SHOT_ROWS rows), before the recipe trains the final model:

1. Settings the user did not set explicitly change (and the change is printed): more epochs (an upper
   bound for the search), a lower learning rate, weight decay, a longer warmup, an evaluation and a
   checkpoint every epoch, and early stopping with a patience fitted to that epoch count. A key set in
   the config or with --set keeps its value (pydantic's model_fields_set says which were set).
2. k-fold cross-validation (k = 5, fewer when rows are very few): the same recipe trains k models,
   each on k-1 folds, and records the validation loss of the held-out fold after every epoch. Folds
   keep each label's rows spread out (labels seen once always stay in training), so every held-out
   label was seen in training. The number of epochs is the one with the lowest mean validation loss
   over the epochs every fold reached; the mean and spread across folds are reported.
3. The final model trains on all training rows for that many epochs (no early stopping: the epochs
   were already chosen on held-out folds), by the caller, with the returned config.

Works for every recipe with the signature recipe(config, run, resume=, console_print=, tracker=):
each fold is a small run directory (few_shot/fold-N/) with its own data splits. Results go to
few_shot.json in the run directory; the report shows them. On --resume, finished folds are reused and
an interrupted fold continues from its checkpoint.
"""

from __future__ import annotations

import math
import random
import shutil
import statistics
from collections import defaultdict

from tuneloop.config.schema import RunConfig, TrainConfig
from tuneloop.errors import TuneloopError
from tuneloop.workspace import RunDir, read_json, read_jsonl, write_json, write_jsonl

FEW_SHOT_ROWS = 100
MAX_FOLDS = 5
MIN_ROWS_PER_FOLD = 4
SEARCH_EPOCHS = 20.0
RESULTS_FILE = "few_shot.json"


def preset_applies(preset: str, train_rows: int) -> bool:
    return preset == "few_shot" or (preset == "auto" and train_rows < FEW_SHOT_ROWS)


def preset_settings(train: TrainConfig, table_keys: frozenset[str] = frozenset()) -> tuple[dict, list[str]]:
    """The few-shot values of the keys the user left at their defaults, and the keys the user set (kept).

    Keys the defaults table chose (table_keys, tuneloop.train.defaults) keep the table's measured value, but
    for the epochs: cross-validation picks those, the preset only sets the upper bound it searches.
    Per-epoch evaluation (eval_every, save_every) is filled in per run, once its row count is known.
    """
    wanted = {
        "epochs": SEARCH_EPOCHS,  # an upper bound: cross-validation picks the number actually used
        # Tiny data gives noisy gradients: smaller steps, the usual advice for few-sample fine-tuning.
        "learning_rate": 2e-5 if train.method == "full" else 1e-4,  # adapters (lora, dora, ...) take larger steps
        "weight_decay": 0.01,
        "warmup_ratio": 0.1,
        # In epochs (one evaluation per epoch): stop a fold once a fifth of the search brings no progress.
        "early_stopping_patience": max(2, round(SEARCH_EPOCHS / 5)),
    }
    explicit = sorted(key for key in wanted if key in train.model_fields_set and key not in table_keys)
    measured = table_keys - {"epochs"}
    return {key: value for key, value in wanted.items() if key not in explicit and key not in measured}, explicit


def apply_preset(config: RunConfig, run: RunDir, recipe, resume: bool = False, console_print=print) -> RunConfig:
    """The config the final training should use: unchanged unless the few-shot preset applies (see module doc)."""
    rows = read_jsonl(run.split("train"))
    if not preset_applies(config.train.preset, len(rows)):
        return config
    results_path = run.root / RESULTS_FILE
    if resume and results_path.is_file() and "final" in read_json(results_path):
        found = read_json(results_path)
        console_print(f"few-shot: cross-validation already done ({found['final']['epochs']:g} epoch(s)); reusing it")
        return _with_train(config, found["final"]["settings"])

    settings, explicit = preset_settings(config.train, table_choices(run))
    why = "train.preset: few_shot" if config.train.preset == "few_shot" else \
        f"{len(rows)} training rows < {FEW_SHOT_ROWS} (train.preset: auto)"
    changed = {key: [getattr(config.train, key), value] for key, value in settings.items()
               if getattr(config.train, key) != value}
    console_print(f"few-shot preset ({why}): " + (", ".join(
        f"train.{key} {old} -> {new}" for key, (old, new) in changed.items()) or "no setting changed"))
    if explicit:
        console_print(f"few-shot preset: kept your explicit {', '.join(f'train.{key}' for key in explicit)}")
    found: dict = {"reason": why, "train_rows": len(rows), "changed": changed, "kept_explicit": explicit}

    search = _with_train(config, settings)
    folds = fold_count(len(rows))
    if folds < 2:
        console_print(f"few-shot: {len(rows)} rows are too few for cross-validation (at least "
                      f"{2 * MIN_ROWS_PER_FOLD}); the final model stops early on the validation split instead")
        final = {**settings, **_per_epoch(search.train, len(rows))}
        found.update(folds=0, final={"epochs": search.train.epochs, "train_rows": len(rows), "settings": final})
        write_json(results_path, found)
        return _with_train(config, final)

    console_print(training_plan(search, run, len(rows), folds, console_print))
    found.update(cross_validate(search, run, recipe, rows, folds, resume, console_print))
    final = {**settings, **_per_epoch(search.train, len(rows))}
    if "epochs" not in explicit and "max_steps" not in config.train.model_fields_set:
        final["epochs"] = float(found["chosen_epochs"])
    if "early_stopping_patience" not in explicit:
        final["early_stopping_patience"] = None  # the epochs were chosen on held-out folds already
    found["final"] = {"epochs": final.get("epochs", config.train.epochs), "train_rows": len(rows), "settings": final}
    write_json(results_path, found)
    loss = found["cv_validation_loss"]
    console_print(f"few-shot: {folds}-fold cross-validation: validation loss {loss['mean']:.4f} ± {loss['std']:.4f} "
                  f"at {found['chosen_epochs']} epoch(s); training the final model on all {len(rows)} rows for "
                  f"{found['final']['epochs']:g} epoch(s)")
    return _with_train(config, final)


def training_plan(config: RunConfig, run: RunDir, rows: int, folds: int, console_print=print) -> str:
    """The cost before it is spent: how many trainings the preset runs, and about how long they take here."""
    from tuneloop.train.estimate import estimate_for_run

    head = (f"few-shot: {folds}-fold cross-validation, then the final model: {folds + 1} trainings of up to "
            f"{config.train.epochs:g} epochs on {rows - rows // folds}-{rows} rows")
    try:
        seconds, how = estimate_for_run(config, run, console_print)
    except Exception as exc:  # an estimate must never stop the run it describes
        seconds, how = None, f"no estimate ({type(exc).__name__})"
    if seconds is None:
        return f"{head}; {how}, so the time shows as the first fold trains"
    total = seconds * folds * (1 - 1 / folds) + seconds  # folds train on (k-1)/k of the rows, the final on all
    return f"{head}; about {total / 60:.1f} min at most ({how}; early stopping usually ends folds sooner)"


def table_choices(run: RunDir) -> frozenset[str]:
    """The train.* keys the defaults table set for this run (its defaults.json), which count as not set by the user."""
    from tuneloop.train.defaults import DEFAULTS_FILE

    path = run.root / DEFAULTS_FILE
    return frozenset(choice["key"] for choice in read_json(path)["chosen"]) if path.is_file() else frozenset()


def fold_count(rows: int) -> int:
    """k: MAX_FOLDS, fewer when rows are so few that a fold would hold under MIN_ROWS_PER_FOLD rows."""
    return min(MAX_FOLDS, rows // MIN_ROWS_PER_FOLD)


def fold_splits(rows: list[dict], folds: int, seed: int) -> list[tuple[list[dict], list[dict]]]:
    """(train, held-out) pairs, one per fold; labelled rows are spread across folds label by label.

    A label with a single row cannot be both trained on and held out, so such rows stay in every
    training part.
    """
    groups: dict[object, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        groups[_label_key(row)].append(index)
    rng = random.Random(seed)
    assignment: dict[int, int] = {}
    position = rng.randrange(folds)
    for key in sorted(groups, key=repr):
        members = groups[key]
        if key is not None and len(members) < 2:
            continue
        rng.shuffle(members)
        for index in members:
            assignment[index] = position % folds
            position += 1
    return [
        ([row for i, row in enumerate(rows) if assignment.get(i) != fold],
         [row for i, row in enumerate(rows) if assignment.get(i) == fold])
        for fold in range(folds)
    ]


def cross_validate(config: RunConfig, run: RunDir, recipe, rows: list[dict], folds: int, resume: bool,
                   console_print=print) -> dict:
    """Train one model per fold with `recipe`; per-epoch validation losses, the best epoch count and its spread."""
    data_format = run.data_format()
    results = []
    for number, (fold_train, fold_heldout) in enumerate(fold_splits(rows, folds, config.seed), start=1):
        fold_run = RunDir(run.root / "few_shot" / f"fold-{number}")
        done = fold_run.root / "fold.json"
        if resume and done.is_file():
            results.append(read_json(done))
            continue
        continuing = resume and fold_run.last_checkpoint() is not None
        if not continuing:
            shutil.rmtree(fold_run.root, ignore_errors=True)
            write_jsonl(fold_run.split("train"), fold_train)
            write_jsonl(fold_run.split("validation"), fold_heldout)
            write_json(fold_run.data / "data_report.json", {"format": data_format, "few_shot_fold": number})
        fold_config = _with_train(config, _per_epoch(config.train, len(fold_train)))

        def say(message: str, number: int = number) -> None:
            console_print(f"few-shot fold {number}/{folds}: {message}")

        recipe(fold_config, fold_run, resume=continuing, console_print=say, tracker=None)
        curve = [record["eval_loss"] for record in read_jsonl(fold_run.train_log) if "eval_loss" in record]
        result = {"fold": number, "train_rows": len(fold_train), "heldout_rows": len(fold_heldout),
                  "validation_loss_by_epoch": curve, "best_epoch": curve.index(min(curve)) + 1 if curve else None}
        write_json(done, result)
        for weights in (fold_run.checkpoints, fold_run.adapter, fold_run.model):  # only the numbers are needed
            shutil.rmtree(weights, ignore_errors=True)
        results.append(result)
    return summarize_folds(results)


def summarize_folds(results: list[dict]) -> dict:
    """Mean and spread of the validation loss per epoch over the epochs every fold reached; the best epoch."""
    curves = [result["validation_loss_by_epoch"] for result in results]
    reached = min(len(curve) for curve in curves)
    if reached == 0:
        raise TuneloopError("a cross-validation fold finished without a single validation loss; "
                           "evaluation runs once per epoch, so every fold should have one")
    mean = [statistics.fmean(curve[epoch] for curve in curves) for epoch in range(reached)]
    spread = [statistics.pstdev(curve[epoch] for curve in curves) for epoch in range(reached)]
    best = mean.index(min(mean))
    return {
        "folds": len(results),
        "fold_results": results,
        "mean_validation_loss_by_epoch": mean,
        "std_validation_loss_by_epoch": spread,
        "chosen_epochs": best + 1,
        "cv_validation_loss": {"mean": mean[best], "std": spread[best]},
    }


def _per_epoch(train: TrainConfig, rows: int) -> dict:
    """Evaluate (and checkpoint) once per epoch, unless the user chose the cadence."""
    steps = max(1, math.ceil(rows / (train.batch_size * train.gradient_accumulation)))
    return {key: steps for key in ("eval_every", "save_every") if key not in train.model_fields_set}


def _with_train(config: RunConfig, updates: dict) -> RunConfig:
    """A copy of the config with these train.* values (pydantic counts them as set from then on)."""
    train = config.train.model_copy(update=updates)
    return config.model_copy(update={"train": train})


def _label_key(row: dict):
    """What folds are stratified on: the label (or label set) of a classification row; None for other data."""
    if "label" not in row:
        return None
    return tuple(sorted(row["label"])) if isinstance(row["label"], list) else row["label"]
