"""The stages of a run over its directory — data, train, evaluate, report — and `run_all`, which chains them.

Each stage reads what the earlier ones wrote, so each can also run alone. A run directory keeps
the config it was started with; resuming checks that the config and the data files are unchanged.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tuneloop.config.load import load_run_config
from tuneloop.config.schema import RunConfig, config_to_yaml
from tuneloop.errors import ConfigError, TuneloopError
from tuneloop.workspace import RunDir, build_manifest, flatten, read_json, sha256_file, write_json, write_text

# Changing these between an interrupted run and its resume would silently train something else.
_RESUME_SENSITIVE = ("seed", "model", "data", "train")


def open_for_run(config: RunConfig, resume: bool = False, overwrite: bool = False) -> RunDir:
    """Create (or, with resume, reopen) the run directory and record config.yaml and manifest.json."""
    run = RunDir(Path(config.output_dir))
    if run.config.exists():
        if overwrite:
            shutil.rmtree(run.root)
        elif resume:
            _check_resumable(config, run)
            return run
        else:
            raise TuneloopError(
                f"output_dir: {run.root} already holds a run. Pass --resume to continue it, --overwrite to replace it, "
                "or choose another directory with --set output_dir=runs/NAME."
            )
    elif run.root.exists() and any(run.root.iterdir()) and not overwrite:
        raise TuneloopError(
            f"output_dir: {run.root} exists and is not empty (and is not a tuneloop run). "
            "Choose another directory with --set output_dir=runs/NAME."
        )
    run.root.mkdir(parents=True, exist_ok=True)
    write_text(run.config, config_to_yaml(config))
    data = config.data
    files = {"train": data.train_file, "validation": data.validation_file, "test": data.test_file}
    _require_files(files)
    if config.model.adapter and not (Path(config.model.adapter) / "adapter_config.json").is_file():
        raise TuneloopError(f"model.adapter: {config.model.adapter} holds no adapter_config.json; point it at a LoRA "
                            "run's adapter/ directory, or remove the key to train a new adapter.")
    for index, path in enumerate(config.evaluate.general_text):  # checked now, not after hours of training
        if not Path(path).is_file():
            raise TuneloopError(f"evaluate.general_text[{index}]: {path}: no such file (relative paths start at the "
                                f"current directory, {Path.cwd()}).")
    write_json(run.manifest, build_manifest(config.model_dump(mode="json"), files, config.seed))
    return run


def data_stage(config: RunConfig, run: RunDir, console_print=print) -> dict:
    from tuneloop.data.stage import prepare_data

    return prepare_data(config.data, run, config.seed, console_print)


# The recipe that trains each data format (train.recipe: auto). Within a recipe the model can refine the choice
# (seq2seq for encoder-decoders, train.classifier for classification).
RECIPE_FOR_FORMAT = {"chat": "sft", "alpaca": "sft", "prompt_completion": "sft", "summarization": "sft",
                     "text": "pretrain", "classification": "classify", "token_classification": "token_classify",
                     "preference": "dpo", "unpaired": "kto", "prompt_only": "grpo"}
# The formats each train.recipe value trains on (KTO also takes pairs: each becomes one good and one bad row).
PREFERENCE_RECIPES = {"dpo": ("preference",), "cpo": ("preference",), "simpo": ("preference",),
                      "orpo": ("preference",), "kto": ("unpaired", "preference"), "reward": ("preference",)}
FORMATS_FOR_RECIPE = {"sft": ("chat", "alpaca", "prompt_completion", "summarization"), "grpo": ("prompt_only",),
                      **PREFERENCE_RECIPES}


def chosen_recipe(config: RunConfig, data_format: str) -> str | None:
    """The recipe train.recipe names (or auto picks for the data); a ConfigError when it does not fit the data."""
    wanted = config.train.recipe
    if wanted == "auto":
        return RECIPE_FOR_FORMAT.get(data_format)
    fits = FORMATS_FOR_RECIPE.get(wanted)
    if fits is not None and data_format not in fits:
        fitting = sorted(recipe for recipe, formats in FORMATS_FOR_RECIPE.items() if data_format in formats)
        raise ConfigError(
            f"train.recipe={wanted!r} trains on {' or '.join(fits)} data, but this run's data is in the {data_format} "
            f"format. For {data_format} data use train.recipe: auto"
            + (f" (or {', '.join(fitting)})" if fitting else "") + ", or give data in a format it takes."
        )
    return wanted


def untrainable_format_message(data_format: str) -> str:
    by_recipe: dict[str, list[str]] = {}
    for name, recipe in RECIPE_FOR_FORMAT.items():
        by_recipe.setdefault(recipe, []).append(name)
    trains = "; ".join(f"{recipe} on {', '.join(names)}" for recipe, names in by_recipe.items())
    return (f"the training data is in the {data_format} format, which no recipe trains on yet ({trains}). Recipes "
            f"for {data_format} data are on the roadmap; `tuneloop data audit` already checks such files.")


def resolve_defaults(config: RunConfig, run: RunDir, console_print=print) -> RunConfig:
    """The config with the defaults table's values for the train.* keys the user left out
    (tuneloop.train.defaults), printed and recorded in the run directory; needs the data stage's splits."""
    from tuneloop.train.defaults import apply_to_run

    recipe = chosen_recipe(config, run.data_format())
    if recipe is None:  # the train stage says why nothing trains on this data
        return config
    return apply_to_run(config, run, recipe, console_print)


def plan_run(config: RunConfig, console_print=print) -> dict:
    """`tuneloop run --dry-run`: the data stage and the defaults table in a scratch directory, then the trainings the
    run would do and their estimated time; nothing is trained and output_dir is not touched."""
    import math
    import tempfile

    from tuneloop.train.estimate import estimate_for_run
    from tuneloop.train.few_shot import FEW_SHOT_ROWS, SEARCH_EPOCHS, fold_count, preset_applies
    from tuneloop.workspace import read_jsonl

    with tempfile.TemporaryDirectory(prefix="tuneloop-plan-") as scratch:
        probe = config.model_copy(update={"output_dir": str(Path(scratch) / "run")})
        run = open_for_run(probe)
        data_stage(probe, run, console_print)
        resolved = resolve_defaults(probe, run, console_print)
        rows = len(read_jsonl(run.split("train")))
        trainings, epochs = 1, resolved.train.epochs
        if preset_applies(resolved.train.preset, rows) and chosen_recipe(resolved, run.data_format()) not in \
                PREFERENCE_RECIPES and fold_count(rows) >= 2:
            trainings = fold_count(rows) + 1
            if "epochs" not in config.train.model_fields_set:  # the folds search up to this many
                epochs = SEARCH_EPOCHS
            console_print(f"plan: {rows} training rows < {FEW_SHOT_ROWS}: the few-shot preset cross-validates the "
                          f"epochs with {fold_count(rows)} folds, then trains the final model: {trainings} trainings")
        seconds, how = estimate_for_run(resolved, run, console_print)
    plan = {"trainings": trainings, "train_rows": rows, "seconds_per_training": seconds}
    if seconds is None:
        console_print(f"plan: {trainings} training(s) of {rows} rows; {how}, so no time estimate before training")
    else:
        per = seconds * (epochs / resolved.train.epochs)
        console_print(f"plan: {trainings} training(s), about {math.ceil(per * trainings / 60)} min at most ({how})")
    console_print("plan: --dry-run: nothing trained")
    return plan


def train_stage(config: RunConfig, run: RunDir, resume: bool = False, console_print=print, tracker=None) -> dict:
    """Train with the recipe for the data's format and model: SFT for conversations, instructions and
    summaries (seq2seq when the model is an encoder-decoder), continued pretraining for plain text,
    classify for labelled text, token_classify for tagged words (NER).

    On tiny data the few-shot preset (tuneloop.train.few_shot) first adjusts the settings and
    cross-validates the number of epochs with the same recipe.
    """
    from tuneloop.train.few_shot import apply_preset

    data_format = run.data_format()
    recipe_name = chosen_recipe(config, data_format)
    if recipe_name is None:
        raise TuneloopError(f"data: {untrainable_format_message(data_format)}")
    if config.train.guard.active():  # a switch this recipe cannot apply fails before any training
        from tuneloop.train.guard.switches import check_guard

        check_guard(config, recipe_name)
    if resume and (run.root / "train_summary.json").is_file() and run.trained_weights() is not None:
        console_print("train: already finished in this run directory; skipping")
        return read_json(run.root / "train_summary.json")
    if recipe_name in PREFERENCE_RECIPES:  # the few-shot preset cross-validates SFT-style losses; not these
        return preference_recipe(recipe_name)(config, run, resume=resume, console_print=console_print,
                                              tracker=tracker)
    if recipe_name not in RECIPE_FOR_FORMAT.values():  # a train.recipe value whose recipe this build lacks
        raise ConfigError(f"train.recipe={recipe_name!r}: that recipe is not available in this installation.")
    recipe = _recipe_for(config, run, data_format, console_print)
    if data_format != "prompt_only":  # the preset cross-validates a validation loss, which GRPO does not have
        config = apply_preset(config, run, recipe, resume=resume, console_print=console_print)
    return recipe(config, run, resume=resume, console_print=console_print, tracker=tracker)


def preference_recipe(name: str):
    """The train function of a preference recipe: dpo/cpo/simpo/orpo (recipes/dpo.py), kto, reward."""
    if name == "kto":
        from tuneloop.recipes.kto import train_kto

        return train_kto
    if name == "reward":
        from tuneloop.recipes.reward import train_reward_model

        return train_reward_model
    from tuneloop.recipes.dpo import train_preference

    return train_preference


def _recipe_for(config: RunConfig, run: RunDir, data_format: str, console_print):
    """The recipe's train function; train.classifier picks the head or the generative classifier."""
    if data_format == "prompt_only" or config.train.recipe == "grpo":
        from tuneloop.recipes.grpo import check_grpo_config, train_grpo

        check_grpo_config(config, data_format)
        return train_grpo
    if data_format == "token_classification":
        from tuneloop.recipes.token_classify import train_token_classifier

        return train_token_classifier
    if data_format != "classification":
        if config.train.classifier != "auto":
            raise ConfigError(
                f"train.classifier={config.train.classifier!r} applies to classification data, but this run's data "
                f"is in the {data_format} format. Remove the key (or set it to auto)."
            )
        if data_format == "text":
            from tuneloop.recipes.pretrain import train_pretraining

            return train_pretraining
        from tuneloop.models.load import is_encoder_decoder
        from tuneloop.models.registry import resolve_model

        if is_encoder_decoder(resolve_model(config.model.name, console_print)):  # T5, BART: source -> target
            from tuneloop.recipes.seq2seq import train_seq2seq

            return train_seq2seq
        from tuneloop.recipes.sft import train_sft

        return train_sft
    from tuneloop.data.labels import is_multi_label
    from tuneloop.models.registry import resolve_model
    from tuneloop.recipes.classify import check_classifier_choice
    from tuneloop.workspace import read_jsonl

    multi_label = is_multi_label(read_jsonl(run.split("train")))
    if check_classifier_choice(config, resolve_model(config.model.name, console_print), multi_label) == "generate":
        from tuneloop.recipes.classify_generative import train_generative_classifier

        return train_generative_classifier
    from tuneloop.recipes.classify import train_classifier

    return train_classifier


def evaluate_stage(config: RunConfig, run: RunDir, data_file: str | None = None, console_print=print) -> dict:
    from tuneloop.evaluate.stage import evaluate_run

    return evaluate_run(config, run, data_file, console_print)


def run_all(
    config: RunConfig, resume: bool = False, overwrite: bool = False, evaluate: bool = True, console_print=print,
    launch=None,
) -> tuple[RunDir, dict]:
    """data -> train (-> evaluate); returns the run directory and the last stage's result.

    `launch` (tuneloop.train.launch.Launch) trains in several processes or on several hosts.
    """
    if launch is not None and launch.accelerate_config:
        from tuneloop.train.launch import accelerate_config_file

        accelerate_config_file(launch.accelerate_config)  # a wrong name fails now, not after the data stage
    if config.train.rewards:  # a wrong GRPO reward entry fails now, not after the data stage
        from tuneloop.train.rewards import resolve_rewards

        resolve_rewards(config.train.rewards)
    if launch is not None and launch.distributed and launch.node_rank != 0:
        return _train_on_another_host(config, launch, resume, console_print)
    run = open_for_run(config, resume=resume, overwrite=overwrite)
    if not (resume and run.split("train").is_file()):  # a resumed run keeps the splits it trained on
        # Before the tracker starts: a bad data file is reported in seconds, not after MLflow's import and set-up.
        data_stage(config, run, console_print)
    config = resolve_defaults(config, run, console_print)
    from tuneloop.train.tracking import log_results, start_tracking  # imports the training stack: after the data

    tracker = start_tracking(config, run)
    try:
        if launch is not None and launch.distributed:
            from tuneloop.train.launch import train_in_processes

            result = train_in_processes(run, launch, resume, console_print)
        else:
            result = train_stage(config, run, resume=resume, console_print=console_print, tracker=tracker)
        if evaluate:
            result = evaluate_stage(config, run, console_print=console_print)
            report_stage(run, console_print)
        log_results(tracker, run)
    except Exception:
        tracker.finish("FAILED")
        raise
    except BaseException:  # Ctrl-C, SIGTERM: the run can be resumed
        tracker.finish("KILLED")
        raise
    tracker.finish()
    return run, result


def _train_on_another_host(config: RunConfig, launch, resume: bool, console_print) -> tuple[RunDir, dict]:
    """Hosts other than node 0 wait for node 0 to prepare the data in the shared run directory, then train."""
    import time

    from tuneloop.train.launch import train_in_processes

    run = RunDir(Path(config.output_dir))
    waited = 0
    while not (run.split("train").is_file() and run.split("validation").is_file()):
        if waited >= 600:
            raise TuneloopError(
                f"output_dir: {run.root} has no prepared data after 10 minutes. Host 0 prepares it; with several "
                "hosts the run directory must be on a filesystem all hosts share (set output_dir to such a path)."
            )
        if waited == 0:
            console_print(f"node {launch.node_rank}: waiting for node 0 to prepare the data in {run.root}")
        time.sleep(5)
        waited += 5
    return run, train_in_processes(run, launch, resume, console_print)


def report_stage(run: RunDir, console_print=print) -> None:
    """report.html and review.html from what the other stages wrote."""
    from tuneloop.evaluate.review import write_review_sheet
    from tuneloop.report.html import write_report

    if run.samples.is_file() and run.samples.stat().st_size:
        write_review_sheet(run.root)
    console_print(f"report: {write_report(run)}")


def _require_files(files: dict[str, str | None]) -> None:
    for role, path in files.items():
        if path and not Path(path).is_file():
            raise TuneloopError(
                f"data.{role}_file: {path}: no such file (relative paths start at the current directory, "
                f"{Path.cwd()})."
            )


def _check_resumable(config: RunConfig, run: RunDir) -> None:
    from tuneloop.config.load import load_config
    from tuneloop.train.defaults import GIVEN_CONFIG_FILE

    # A resume may be given either the config the run started from (config_given.yaml) or the run's config.yaml,
    # which also holds the defaults table's values (the interrupt message and the UI's Resume name that one).
    given = run.root / GIVEN_CONFIG_FILE
    candidates = [load_config(given)] if given.is_file() else []
    candidates.append(load_run_config(run))
    current = flatten(config.model_dump(mode="json"))
    differences = []
    for saved_config in candidates:
        saved = flatten(saved_config.model_dump(mode="json"))
        differences.append(sorted(
            key for key in saved.keys() | current.keys()
            if key.split(".")[0] in _RESUME_SENSITIVE and saved.get(key) != current.get(key)
        ))
    changed = min(differences, key=len)
    if changed:
        raise TuneloopError(
            f"--resume: the config differs from the one {run.root} was started with at {', '.join(changed)}. "
            "Resume with the same config, or start over with --overwrite."
        )
    recorded = read_json(run.manifest).get("data_files", {})
    for role, info in recorded.items():
        if Path(info["path"]).is_file() and sha256_file(Path(info["path"])) != info["sha256"]:
            raise TuneloopError(
                f"--resume: data.{role}_file {info['path']} changed since the run started (sha256 differs). "
                "Restore it, or start over with --overwrite."
            )

