"""The defaults table: train settings chosen by measurement, per recipe, model kind and size, method and row count.

A user who writes only a model and data files gets these values for every train.* key they left out; a key
set in the config or with --set always wins (pydantic's model_fields_set says which were set). Each entry
names the benchmark that chose it; `benchmarks/defaults_sweep.py` re-measures the entries and checks each one
on a dataset it was not chosen on (docs/defaults.md). Entries are tried in order, the first that matches
wins, so specific entries come before general ones. When no entry matches (an unknown model kind, a recipe
without measurements) the schema's generic defaults stay and the run says so.

The method itself is chosen first (METHOD_TABLE), then the settings for that method (SETTINGS_TABLE).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuneloop.config.schema import RunConfig, TrainConfig, config_to_yaml
from tuneloop.models.facts import ModelFacts
from tuneloop.workspace import RunDir, read_jsonl, write_json, write_text

ANY = None
SMALL_LM = 1_000_000_000  # causal LMs up to 1B parameters: the sizes measured on this project's CPU
SMALL_ENCODER = 150_000_000
FEW_ROWS = 100  # under this, tuneloop.train.few_shot cross-validates the epochs


@dataclass(frozen=True)
class Entry:
    """Settings for runs that match every given field (ANY matches everything); min_rows <= rows < max_rows."""

    recipes: tuple[str, ...]
    kinds: tuple[str, ...]
    values: dict[str, Any]  # keys below train., dotted for subsections (lora.rank)
    when: str  # the case in words, shown to the user: "LoRA SFT of a causal LM up to 1B"
    benchmark: str  # what chose these values
    methods: tuple[str, ...] | None = ANY
    max_parameters: int | None = ANY
    min_rows: int = 0
    max_rows: int | None = ANY

    def matches(self, recipe: str, facts: ModelFacts, method: str | None, rows: int) -> bool:
        return (recipe in self.recipes and facts.kind in self.kinds
                and (self.methods is ANY or method in self.methods)
                and (self.max_parameters is ANY or (facts.parameters or 0) <= self.max_parameters)
                and self.min_rows <= rows and (self.max_rows is ANY or rows < self.max_rows))


SFT_RECIPES = ("sft", "seq2seq", "pretrain")
CLASSIFY_RECIPES = ("classify", "token_classify")
PAIR_RECIPES = ("dpo", "cpo", "simpo", "orpo", "kto")
LM_KINDS = ("causal-lm", "encoder-decoder")

METHOD_TABLE: tuple[Entry, ...] = (
    Entry(CLASSIFY_RECIPES, ("encoder",), {"method": "full"},
          "a classifier on an encoder up to 150M: LoRA trials stayed at 1-5% accuracy on 77 intents",
          "benchmarks/search_pruning.py (Banking77: the search picked full fine-tuning) and "
          "benchmarks/defaults_sweep.py", max_parameters=SMALL_ENCODER),
)

SETTINGS_TABLE: tuple[Entry, ...] = (
    Entry(CLASSIFY_RECIPES, ("encoder",), {"learning_rate": 1e-4, "epochs": 6.0, "batch_size": 16,
                                           "warmup_ratio": 0.06, "weight_decay": 0.01},
          "full fine-tune of a small encoder on under 1,000 rows",
          "benchmarks/defaults_sweep.py (best of its grid on the other datasets in every leave-one-out fold; "
          "on 400 rows 0.68, 1.01 and 0.80 of a 20-trial search's test accuracy on Banking77, SST-2, topics)",
          methods=("full",), max_parameters=SMALL_ENCODER, max_rows=1000),
    Entry(CLASSIFY_RECIPES, ("encoder",), {"learning_rate": 1e-4, "epochs": 3.0, "batch_size": 16,
                                           "warmup_ratio": 0.06, "weight_decay": 0.01},
          "full fine-tune of a small encoder", "benchmarks/intent_classify.yaml, sentiment_classify.yaml and "
          "ner_news.yaml (lr 1e-4 on 9,000-40,000 rows: 92.2%, 88.4%, entity F1 86.1)", methods=("full",),
          max_parameters=SMALL_ENCODER),
    Entry(SFT_RECIPES, LM_KINDS, {"learning_rate": 1e-3, "epochs": 6.0},
          "LoRA SFT of a small LM on under 1,000 rows", "docs/methods.md and docs/defaults.md (quickstart, 162 "
          "rows: 70.0-71.7 contains-answer; the starter's 2e-4 x 3 epochs: 0.40 on 60 fictional facts)",
          methods=("lora", "dora", "qlora"),
          max_parameters=SMALL_LM, max_rows=1000),
    Entry(SFT_RECIPES, LM_KINDS, {"learning_rate": 5e-5, "epochs": 6.0},
          "full SFT of a small LM on under 1,000 rows", "docs/methods.md (quickstart: 63.3 at 5e-5)",
          methods=("full",), max_parameters=SMALL_LM, max_rows=1000),
    Entry(SFT_RECIPES, LM_KINDS, {"learning_rate": 3e-2, "epochs": 6.0},
          "IA3 SFT of a small LM on under 1,000 rows", "docs/methods.md (quickstart: 0.0 at 1e-3, 43.3 at 1e-2, "
          "58.3 at 3e-2 contains-answer)",
          methods=("ia3",), max_parameters=SMALL_LM, max_rows=1000),
    Entry(SFT_RECIPES, LM_KINDS, {"learning_rate": 3e-2, "epochs": 6.0},
          "prefix tuning of a small LM on under 1,000 rows", "docs/methods.md (quickstart: 0.0 contains-answer "
          "at 1e-2 and at 3e-2, validation loss 1.92 and 0.67; no rate measured learns the facts)",
          methods=("prefix",), max_parameters=SMALL_LM, max_rows=1000),
    Entry(SFT_RECIPES, LM_KINDS, {"learning_rate": 3e-2, "epochs": 6.0},
          "prompt tuning of a small LM on under 1,000 rows", "docs/methods.md (quickstart: 0.0 contains-answer "
          "at 1e-3; 3e-2, the rate IA3 and prefix tuning do best at, is not measured for prompt tuning yet)",
          methods=("prompt",), max_parameters=SMALL_LM, max_rows=1000),
    Entry(PAIR_RECIPES, ("causal-lm",), {"learning_rate": 5e-4, "epochs": 1.0, "warmup_ratio": 0.1,
                                         "preference.beta": 0.05},
          "LoRA preference tuning of a small causal LM", "benchmarks/hh_dpo.yaml and hh_kto.yaml (HH-RLHF "
          "harmless: 51.8 -> 59.7 and 57.3; beta 0.1 moved the model too little)", methods=("lora", "dora"),
          max_parameters=SMALL_LM),
)


@dataclass(frozen=True)
class Choice:
    key: str  # below train., dotted
    value: Any
    why: str
    benchmark: str


@dataclass
class Chosen:
    """What the table gave a run: the values taken, the keys the user set (kept), and a note when nothing fit."""

    choices: list[Choice] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    fallback: str | None = None

    def updates(self) -> dict[str, Any]:
        return {choice.key: choice.value for choice in self.choices}

    def lines(self) -> list[str]:
        """What the run prints at start, one line per value taken."""
        groups: dict[tuple[str, str], list[Choice]] = {}
        for choice in self.choices:  # one line per table entry: its values, then why and what measured them
            groups.setdefault((choice.why, choice.benchmark), []).append(choice)
        said = [f"defaults: {', '.join(f'train.{c.key} {format_value(c.value)}' for c in group)}: {why} (chosen by "
                f"{benchmark})" for (why, benchmark), group in groups.items()]
        if self.kept:
            said.append(f"defaults: kept your {', '.join(f'train.{key}' for key in self.kept)}")
        if self.fallback:
            said.append(f"defaults: {self.fallback}")
        return said

    def as_json(self) -> dict:
        return {"chosen": [vars(choice) for choice in self.choices], "kept": self.kept, "fallback": self.fallback}


def format_value(value: Any) -> str:
    """1e-4, 6.5e-4, 0.06, 3, full."""
    if not isinstance(value, float):
        return str(value)
    if value and abs(value) < 0.01:
        mantissa, exponent = f"{value:.2e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{value:g}"


def explicit_keys(train: TrainConfig) -> set[str]:
    """The train.* keys the user set (in the file or with --set), dotted below train."""
    keys = set(train.model_fields_set)
    for name in ("lora", "preference", "grpo"):
        section = getattr(train, name)
        keys |= {f"{name}.{key}" for key in section.model_fields_set}
    return keys


def choose_defaults(train: TrainConfig, recipe: str, facts: ModelFacts, rows: int) -> Chosen:
    """The table's values for the keys the user left out, and why each was chosen."""
    user = explicit_keys(train)
    chosen = Chosen()
    case = f"{facts.describe()}, {rows:,} training rows"
    if facts.kind == "unknown":
        chosen.fallback = (f"the model's kind is unknown ({facts.unknown_because}), so no measured entry applies; "
                           f"the generic defaults stay (train.method {train.method}, train.learning_rate "
                           f"{format_value(train.learning_rate)}, train.epochs {train.epochs:g})")
        return chosen
    method = train.method
    if "method" not in user:
        entry = _first(METHOD_TABLE, recipe, facts, None, rows)
        if entry is not None and entry.values["method"] != method:
            method = entry.values["method"]
            chosen.choices.append(Choice("method", method, f"{entry.when}; {case}", entry.benchmark))
    entry = _first(SETTINGS_TABLE, recipe, facts, method, rows)
    if entry is None:
        chosen.fallback = (f"no measured entry for {recipe} with {method} on {case}; the generic defaults stay "
                           f"(train.learning_rate {format_value(train.learning_rate)}, train.epochs "
                           f"{train.epochs:g})")
        return chosen
    for key, value in entry.values.items():
        if key in user:
            chosen.kept.append(key)
        elif _current(train, key) != value:
            chosen.choices.append(Choice(key, value, f"{entry.when}; {case}", entry.benchmark))
    return chosen


def with_train_values(train: TrainConfig, updates: dict[str, Any]) -> TrainConfig:
    """A copy of the train section with these dotted keys set (subsections copied too)."""
    top = {key: value for key, value in updates.items() if "." not in key}
    for name in {key.split(".")[0] for key in updates if "." in key}:
        inner = {key.split(".", 1)[1]: value for key, value in updates.items() if key.startswith(f"{name}.")}
        top[name] = getattr(train, name).model_copy(update=inner)
    return train.model_copy(update=top)


DEFAULTS_FILE = "defaults.json"
GIVEN_CONFIG_FILE = "config_given.yaml"


def apply_to_run(config: RunConfig, run: RunDir, recipe: str, console_print=print) -> RunConfig:
    """The run's config with the table's values in; prints each choice, records them (defaults.json) and
    rewrites config.yaml with the values the run trains with (the config as given stays in config_given.yaml;
    a resume may name either file). On a resume the choices recorded at the start stand."""
    from tuneloop.models.facts import model_facts
    from tuneloop.models.registry import resolve_model

    facts = model_facts(resolve_model(config.model.name, console_print))
    rows = sum(1 for _ in read_jsonl(run.split("train")))
    chosen = choose_defaults(config.train, recipe, facts, rows)
    resolved = config.model_copy(update={"train": with_train_values(config.train, chosen.updates())})
    given = run.root / GIVEN_CONFIG_FILE
    if given.is_file() and (run.root / DEFAULTS_FILE).is_file():
        # A resume: the choices were recorded when the run started; a resume from config.yaml would otherwise
        # print and record the table's values as the user's own.
        console_print(f"defaults: as chosen when the run started ({run.root / DEFAULTS_FILE})")
        return resolved
    for line in chosen.lines():
        console_print(line)
    if not given.is_file():
        write_text(given, run.config.read_text(encoding="utf-8"))
    record = {"recipe": recipe, "model": {"kind": facts.kind, "parameters": facts.parameters},
              "train_rows": rows} | chosen.as_json()
    write_json(run.root / DEFAULTS_FILE, record)
    header = "".join(f"# {line}\n" for line in chosen.lines())
    write_text(run.config, header + config_to_yaml(resolved))
    return resolved


def _first(table: tuple[Entry, ...], recipe: str, facts: ModelFacts, method: str | None, rows: int) -> Entry | None:
    return next((entry for entry in table if entry.matches(recipe, facts, method, rows)), None)


def _current(train: TrainConfig, key: str) -> Any:
    node: Any = train
    for part in key.split("."):
        node = getattr(node, part)
    return node
