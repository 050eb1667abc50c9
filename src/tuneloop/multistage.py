"""Multi-stage runs: one config lists stages, each trained from the previous stage's output; one report.

    output_dir: runs/chain
    model: {name: smollm2-135m-instruct}
    train: {epochs: 1}                  # top-level sections are defaults every stage inherits
    stages:
      - name: domain                    # continued pretraining on raw text
        data: {train_file: notes.txt}
        train: {method: full}
      - name: assistant                 # then SFT on conversations, from the domain stage's weights
        data: {train_file: qa.jsonl}

Each stage deep-merges its own sections over the top-level ones (mappings key by key; lists and
values replace) and is validated as a whole RunConfig; errors name the key as written,
`stages[1].train.learning_rate` (counting from 0). Stage i runs as a normal run directory in
output_dir/stages/NN-name (NN counts from 01), so `tuneloop report`, `evaluate` and `chat` work on
it, and its baseline is the model it started from. Stage i+1 starts from stage i's model/ (full
fine-tune) or merged/ (its LoRA adapter folded into the weights), so every stage trains plain weights.

Before any training, every stage's data is checked: files exist, the format has a recipe
and fits train.recipe (SFT then DPO is a common chain), a GRPO stage (prompt_only data) names reward
functions that resolve, and only the last stage may be a classifier.
`--resume` skips finished stages (their config must be unchanged) and resumes the interrupted one.

output_dir also holds chain.yaml (the config as run), chain.json (stages, their directories and
status) and report.html (each stage's headline metrics, baseline vs tuned, linking its own report).
"""

from __future__ import annotations

import copy
import re
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tuneloop.config.load import raise_problems
from tuneloop.config.schema import RunConfig, describe_error
from tuneloop.errors import ConfigError, DataError, TrainingInterrupted, TuneloopError
from tuneloop.workspace import RunDir, read_json, write_json, write_text

STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class Stage:
    index: int  # from 0, as in the config's stages list
    name: str
    config: RunConfig

    @property
    def directory_name(self) -> str:
        return f"{self.index + 1:02d}-{self.name}"

    @property
    def run(self) -> RunDir:
        return RunDir(Path(self.config.output_dir))

    @property
    def handoff(self) -> Path:
        """Plain weights the next stage starts from."""
        return handoff_path(self.run, self.config.train.method)


@dataclass(frozen=True)
class Chain:
    output_dir: Path
    raw: dict
    stages: list[Stage]


def handoff_path(run: RunDir, method: str) -> Path:
    return run.model if method == "full" else run.root / "merged"


def is_multi_stage(raw: dict) -> bool:
    return "stages" in raw


def deep_merge(base: dict, override: dict) -> dict:
    """base with override on top: mappings merge key by key; lists and values replace."""
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def validate_chain(raw: dict[str, Any], source: str = "config") -> Chain:
    """Every stage merged over the defaults and validated; one ConfigError lists every problem."""
    stages_raw = raw.get("stages")
    if not isinstance(stages_raw, list) or not stages_raw:
        raise_problems(["stages: expected a list of stages, each a mapping with a name and its own sections "
                        "(data, train, ...)."], source)
    defaults = {key: value for key, value in raw.items() if key != "stages"}
    problems: list[str] = []
    # Problems in the defaults are named once, at their top-level key; a missing key may come from each stage.
    default_errors = {tuple(err["loc"]): describe_error(err) for err in _errors(defaults) if err["type"] != "missing"}
    problems += default_errors.values()
    output_dir = Path(defaults.get("output_dir") or RunConfig.model_fields["output_dir"].default)

    stages: list[Stage] = []
    names: set[str] = set()
    previous: Path | None = None
    for index, entry in enumerate(stages_raw):
        where = f"stages[{index}]"
        if not isinstance(entry, dict):
            problems.append(f"{where}: expected a mapping with a name and sections (data, train, ...), got "
                            f"{type(entry).__name__}.")
            continue
        sections = {key: value for key, value in entry.items() if key != "name"}
        name = entry.get("name")
        if not isinstance(name, str) or not STAGE_NAME.match(name):
            problems.append(f"{where}.name: {'required but missing' if name is None else f'{name!r} is not usable'};"
                            " give each stage a short name of letters, digits, '-', '_' or '.' (it names its "
                            "directory).")
            name = f"stage{index + 1}"
        elif name in names:
            problems.append(f"{where}.name: {name!r} is already the name of an earlier stage; names must differ.")
        names.add(name)
        if "output_dir" in sections:
            problems.append(f"{where}.output_dir: each stage runs in output_dir/stages/NN-name; set output_dir at the "
                            "top level only.")
            del sections["output_dir"]
        if "stages" in sections:
            problems.append(f"{where}.stages: stages do not nest; list every stage at the top level.")
            del sections["stages"]
        if previous is not None and isinstance(sections.get("model"), dict) and "name" in sections["model"]:
            problems.append(f"{where}.model.name: a later stage starts from the previous stage's output; set "
                            "model.name at the top level or in stages[0].")

        merged = deep_merge(defaults, sections)
        merged["output_dir"] = str(output_dir / "stages" / f"{index + 1:02d}-{name}")
        if previous is not None:
            model = merged.get("model")
            merged["model"] = {**(model if isinstance(model, dict) else {}), "name": str(previous)}
        errors = _errors(merged)
        problems += [describe_error(err, f"{where}.") for err in errors
                     if not (tuple(err["loc"]) in default_errors and not _sets(sections, err["loc"]))]
        train = merged.get("train")
        method = train.get("method", "lora") if isinstance(train, dict) else "lora"
        previous = handoff_path(RunDir(Path(merged["output_dir"])), method)
        if not errors:
            stages.append(Stage(index, name, RunConfig.model_validate(merged)))
    if problems:
        raise_problems(problems, source)
    return Chain(output_dir, raw, stages)


def _errors(raw: dict) -> list[dict]:
    try:
        RunConfig.model_validate(raw)
    except ValidationError as exc:
        return exc.errors()
    return []


def _sets(sections: dict, loc: tuple) -> bool:
    """Does the stage itself set the key at loc (rather than inherit it)?"""
    node: Any = sections
    for part in loc:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def preflight(chain: Chain, source: str = "config") -> dict[str, str]:
    """Check every stage's files and data format before anything trains; return each stage's format."""
    from tuneloop.data.prepare import load_examples
    from tuneloop.stages import RECIPE_FOR_FORMAT, chosen_recipe, untrainable_format_message

    problems, formats = [], {}
    for stage in chain.stages:
        where, data = f"stages[{stage.index}]", stage.config.data
        files = {"train": data.train_file, "validation": data.validation_file, "test": data.test_file}
        missing = [f"{where}.data.{role}_file: {path}: no such file" for role, path in files.items()
                   if path and not Path(path).is_file()]
        missing += [f"{where}.evaluate.general_text[{i}]: {path}: no such file"
                    for i, path in enumerate(stage.config.evaluate.general_text) if not Path(path).is_file()]
        if missing:
            problems += missing
            continue
        try:
            found = load_examples(data.train_file, data.format, skip_invalid=True, max_rows=50).format
        except DataError as exc:
            problems.append(f"{where}.data.train_file: {exc}")
            continue
        formats[stage.name] = found
        try:
            recipe = chosen_recipe(stage.config, found)
        except ConfigError as exc:  # train.recipe names a recipe that does not take this data
            problems.append(f"{where}.{exc}")
            continue
        if recipe is None and found not in RECIPE_FOR_FORMAT:
            problems.append(f"{where}.data: {data.train_file}: {untrainable_format_message(found)}")
        elif found == "prompt_only":  # GRPO: its reward functions must resolve before anything trains
            from tuneloop.recipes.grpo import check_grpo_config

            try:
                check_grpo_config(stage.config, found)
            except ConfigError as exc:
                problems.append(f"{where}.{exc}")
        elif found == "classification" and stage.index < len(chain.stages) - 1:
            problems.append(f"{where}.data: {data.train_file} is classification data, which makes a classifier; "
                            "a later stage cannot continue from it. Make the classification stage the last one.")
    if problems:
        listed = "\n".join(f"  - {problem}" for problem in problems)
        raise TuneloopError(f"{source}: {len(problems)} stage problem(s), found before any training:\n{listed}"
                            "\n(relative paths start at the current directory, " + f"{Path.cwd()})")
    return formats


def run_chain(chain: Chain, source: str, resume: bool = False, overwrite: bool = False, evaluate: bool = True,
              console_print=print) -> list[dict]:
    """Run every stage in order (skipping finished ones on resume); write the combined report; each stage's result."""
    from tuneloop.models.export import export_run
    from tuneloop.report.multistage_html import write_chain_report
    from tuneloop.stages import chosen_recipe, open_for_run, run_all

    root = chain.output_dir
    _open_chain_dir(root, resume, overwrite)
    formats = preflight(chain, source)
    root.mkdir(parents=True, exist_ok=True)
    if not (root / "chain.yaml").is_file():  # on resume it is rewritten once the stages accepted the config
        write_text(root / "chain.yaml", yaml.safe_dump(chain.raw, sort_keys=False))
    state_path = root / "chain.json"
    state = read_json(state_path) if state_path.is_file() else {}
    finished = {entry["run_dir"] for entry in state.get("stages", []) if entry.get("status") == "finished"}
    entries, results = [], []
    for stage in chain.stages:
        last = stage.index == len(chain.stages) - 1
        entry = {
            "name": stage.name, "run_dir": f"stages/{stage.directory_name}", "model": stage.config.model.name,
            "format": formats[stage.name], "recipe": chosen_recipe(stage.config, formats[stage.name]),
            "method": stage.config.train.method, "status": "pending",
        }
        entries.append(entry)
        label = f"stage {stage.index + 1}/{len(chain.stages)} {stage.name}"
        handoff_ready = last or (stage.handoff / "config.json").is_file()
        if resume and entry["run_dir"] in finished and handoff_ready:
            open_for_run(stage.config, resume=True)  # refuses a stage whose config changed since it finished
            console_print(f"{label}: finished earlier; skipping")
            entry.update(status="finished", finished=_finished_at(state, entry["run_dir"]))
            results.append(read_json(stage.run.metrics) if stage.run.metrics.is_file() else {})
            continue
        console_print(f"{label}: {entry['recipe']} ({entry['method']}) on {entry['format']} data, from "
                      f"{stage.config.model.name}; run directory {stage.run.root}")
        _write_state(state_path, entries, chain.stages)
        try:
            _, result = run_all(stage.config, resume=resume and stage.run.config.is_file(), evaluate=evaluate,
                                console_print=console_print)
        except TrainingInterrupted:
            raise TrainingInterrupted(
                f"{label} was interrupted; its checkpoint is saved in {stage.run.checkpoints}. Continue the whole "
                f"run with `tuneloop run {source} --resume` (finished stages are skipped)."
            ) from None
        if not last and stage.config.train.method != "full" and not handoff_ready:
            console_print(f"{label}: folding the adapter into the weights for the next stage ({stage.handoff})")
            export_run(stage.config, stage.run, stage.handoff, merge=True)
        entry.update(status="finished", finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        _write_state(state_path, entries, chain.stages)
        results.append(result)
    write_text(root / "chain.yaml", yaml.safe_dump(chain.raw, sort_keys=False))
    console_print(f"report: {write_chain_report(root)}")
    return results


def _open_chain_dir(root: Path, resume: bool, overwrite: bool) -> None:
    if (root / "chain.yaml").is_file():
        if overwrite:
            shutil.rmtree(root)
        elif not resume:
            raise TuneloopError(
                f"output_dir: {root} already holds a multi-stage run. Pass --resume to continue it (finished stages "
                "are skipped), --overwrite to replace it, or choose another directory with --set output_dir=runs/NAME."
            )
    elif root.exists() and any(root.iterdir()):
        if not overwrite:
            raise TuneloopError(f"output_dir: {root} exists and is not empty (and is not a multi-stage run). Choose "
                                "another directory with --set output_dir=runs/NAME.")
        shutil.rmtree(root)


def _finished_at(state: dict, run_dir: str) -> str | None:
    return next((e.get("finished") for e in state.get("stages", []) if e["run_dir"] == run_dir), None)


def _write_state(path: Path, entries: list[dict], stages: list[Stage]) -> None:
    pending = [{"name": s.name, "run_dir": f"stages/{s.directory_name}", "status": "pending"}
               for s in stages[len(entries):]]
    write_json(path, {"stages": entries + pending})


def describe_chain(chain: Chain, formats: dict[str, str]) -> str:
    """'domain (text, full) -> assistant (chat, lora)' for messages."""
    return " -> ".join(f"{s.name} ({formats.get(s.name, '?')}, {s.config.train.method})" for s in chain.stages)
