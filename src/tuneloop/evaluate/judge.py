"""Pairwise LLM-as-judge: which of two answers to the same prompt is better (tuned vs baseline, or run A vs run B).

Every pair is asked twice, once with the first answer shown as A and once with it shown as B, so a judge that
favours a position cannot favour a side. The two verdicts combine, from the first answer's point of view:

    win    it wins both orders, or wins one and ties the other
    loss   the same for the second answer
    tie    both orders tie, or the orders disagree (the judge picked a position, not an answer: counted as
           `inconsistent` as well)
    invalid  a reply had no A / B / TIE verdict in it; reported, and left out of the win rate

The win rate is (win + 0.5 * tie) / judged rows, with a 95% bootstrap interval over rows.

The judge is any `TextGenerator` (tuneloop.data.augment): by default the local `smollm2-135m-instruct`, which is
a weak judge at 135M parameters and mostly useful to try the pipeline; for verdicts worth reading use a strong
model behind an OpenAI-compatible endpoint, `OpenAIGenerator(base_url, model)`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from tuneloop.data.text_generator import TextGenerator
from tuneloop.errors import DataError, TuneloopError
from tuneloop.evaluate.stats import bootstrap_interval
from tuneloop.models.generators import LocalGenerator
from tuneloop.workspace import RunDir, read_jsonl, write_json

DEFAULT_JUDGE_MODEL = "smollm2-135m-instruct"
JUDGE_MAX_NEW_TOKENS = 32  # the judge is asked for one word; a little room for a model that adds a phrase
CONFIDENCE = 0.95
JUDGE_FILE = "judge.json"
OUTCOME_SCORES = {"win": 1.0, "tie": 0.5, "loss": 0.0}

JUDGE_PROMPT = """You are grading two answers to the same request. Decide which one is better.

### Request
{question}
{reference_block}
### Answer A
{answer_a}

### Answer B
{answer_b}

### How to decide
{criteria}
Judge the content only: which answer is shown first, and how long it is, do not matter.

### Your verdict
Reply with exactly one word: A if answer A is better, B if answer B is better, TIE if they are equally good \
or equally bad."""

REFERENCE_BLOCK = "\n### Reference answer (taken as correct)\n{reference}\n"
CRITERIA_WITH_REFERENCE = (
    "1. Correctness first: an answer that agrees with the reference answer beats one that contradicts it or "
    "leaves out what it says.\n2. Then helpfulness: it does what was asked.\n3. Then concision: no padding, "
    "no repetition."
)
CRITERIA_WITHOUT_REFERENCE = (
    "1. Correctness first: right facts and sound reasoning beat wrong ones.\n2. Then helpfulness: it does what "
    "was asked.\n3. Then concision: no padding, no repetition."
)

_BRACKETED_VERDICT = re.compile(r"\[\[?\s*(tie|a|b)\s*\]?\]", re.IGNORECASE)
_LABELLED_VERDICT = re.compile(
    r"\b(?:verdict|answer|winner|choice|decision|better)\s*(?:is\s*)?[:=\-]?\s*\**\s*(tie|a|b)\b", re.IGNORECASE
)
_STANDALONE_VERDICT = re.compile(r"(?<![A-Za-z0-9])(tie|a|b)(?![A-Za-z0-9])", re.IGNORECASE)


# ---------------------------------------------------------------- prompt and verdict


def render_messages(prompt: str | Sequence[dict]) -> str:
    """A prompt as plain text: a string as is, a lone user message as its content, else `Role: content` turns."""
    if isinstance(prompt, str):
        return prompt
    messages = list(prompt)
    if len(messages) == 1 and messages[0].get("role") == "user":
        return str(messages[0].get("content", ""))
    return "\n\n".join(f"{str(m.get('role', 'user')).capitalize()}: {m.get('content', '')}" for m in messages)


def judge_prompt(question: str | Sequence[dict], answer_a: str, answer_b: str, reference: str | None = None) -> str:
    """The text the judge reads: the request, the reference answer when there is one, answers A and B."""
    has_reference = bool(reference and reference.strip())
    return JUDGE_PROMPT.format(
        question=render_messages(question).strip(),
        reference_block=REFERENCE_BLOCK.format(reference=reference.strip()) if has_reference else "",
        answer_a=answer_a.strip(),
        answer_b=answer_b.strip(),
        criteria=CRITERIA_WITH_REFERENCE if has_reference else CRITERIA_WITHOUT_REFERENCE,
    )


def parse_verdict(reply: str) -> str | None:
    """"A", "B" or "TIE" from a judge's reply, or None when it holds no verdict.

    Tries, in order: a bracketed verdict ("[[A]]"), a labelled one ("Verdict: B", "Answer A"), then the first
    standalone A / B / TIE, where a lower-case "a" before a word is read as the article, not a verdict.
    """
    for pattern in (_BRACKETED_VERDICT, _LABELLED_VERDICT, _STANDALONE_VERDICT):
        verdict = _first_verdict(pattern, reply)
        if verdict:
            return verdict
    return None


def _first_verdict(pattern: re.Pattern, reply: str) -> str | None:
    for found in pattern.finditer(reply):
        token = found.group(1)
        if token == "a" and re.match(r"\s+[A-Za-z]", reply[found.end():]):
            continue  # "a tie", "a better answer": the article
        return token.upper()
    return None


# ---------------------------------------------------------------- combining the two orders


def _winner(verdict: str | None, first_is_a: bool) -> str | None:
    """The verdict from the first answer's side: "first", "second", "tie", or None when unparseable."""
    if verdict is None:
        return None
    if verdict == "TIE":
        return "tie"
    return "first" if (verdict == "A") == first_is_a else "second"


def combine_orders(first_as_a: str | None, first_as_b: str | None) -> tuple[str, bool]:
    """(outcome, inconsistent) for one row from its two verdicts ("A" / "B" / "TIE" / None)."""
    winners = {_winner(first_as_a, first_is_a=True), _winner(first_as_b, first_is_a=False)}
    if None in winners:
        return "invalid", False
    if winners == {"first", "second"}:
        return "tie", True
    if "first" in winners:
        return "win", False
    if "second" in winners:
        return "loss", False
    return "tie", False


# ---------------------------------------------------------------- judging


def default_judge() -> LocalGenerator:
    """The local judge: smollm2-135m-instruct. Weak at 135M; prefer OpenAIGenerator with a strong model."""
    return LocalGenerator(DEFAULT_JUDGE_MODEL, max_new_tokens=JUDGE_MAX_NEW_TOKENS)


def judge_pairs(
    prompts: Sequence[str | Sequence[dict]],
    answers_first: Sequence[str],
    answers_second: Sequence[str],
    references: Sequence[str | None] | None = None,
    generator: TextGenerator | None = None,
    batch_size: int = 16,
) -> dict:
    """Judge each (first, second) answer pair in both orders; counts, per-row outcomes and the first's win rate.

    Returns `{"n", "judged", "win", "tie", "loss", "invalid", "inconsistent", "win_rate", "win_rate_interval",
    "confidence", "judge", "rows"}`; each row holds its outcome, whether the orders disagreed, both verdicts
    (first shown as A, then first shown as B) and the judge's raw replies. `generator` defaults to the local
    smollm2-135m-instruct (see the module docstring for why an endpoint judge is better).
    """
    _check_lengths(prompts, answers_first, answers_second, references)
    generator = generator or default_judge()
    references = references if references is not None else [None] * len(prompts)
    questions = []
    for prompt, first, second, reference in zip(prompts, answers_first, answers_second, references, strict=True):
        questions.append(judge_prompt(prompt, first, second, reference))
        questions.append(judge_prompt(prompt, second, first, reference))
    replies = _ask(generator, questions, batch_size)
    rows = [_judged_row(index, replies[2 * index], replies[2 * index + 1]) for index in range(len(prompts))]
    return {**summarize_outcomes(rows), "judge": _judge_name(generator), "rows": rows}


def _check_lengths(prompts: Sequence, first: Sequence, second: Sequence, references: Sequence | None) -> None:
    lengths = {"prompts": len(prompts), "answers_first": len(first), "answers_second": len(second)}
    if references is not None:
        lengths["references"] = len(references)
    if len(set(lengths.values())) > 1:
        described = ", ".join(f"{name}={count}" for name, count in lengths.items())
        raise DataError(f"judge_pairs needs one of each per row, but got {described}.")


def _ask(generator: TextGenerator, questions: list[str], batch_size: int) -> list[str]:
    replies: list[str] = []
    with tqdm(total=len(questions), desc="judge", unit="verdict", dynamic_ncols=True) as bar:
        for start in range(0, len(questions), max(1, batch_size)):
            chunk = questions[start : start + max(1, batch_size)]
            answers = generator.generate(chunk)
            if len(answers) != len(chunk):
                raise DataError(f"the judge answered {len(answers)} of {len(chunk)} prompts.")
            replies.extend(str(answer) for answer in answers)
            bar.update(len(chunk))
    return replies


def _judged_row(index: int, reply_first_as_a: str, reply_first_as_b: str) -> dict:
    verdicts = [parse_verdict(reply_first_as_a), parse_verdict(reply_first_as_b)]
    outcome, inconsistent = combine_orders(*verdicts)
    return {
        "index": index,
        "outcome": outcome,
        "inconsistent": inconsistent,
        "verdicts": verdicts,
        "replies": [reply_first_as_a, reply_first_as_b],
    }


def summarize_outcomes(rows: list[dict], confidence: float = CONFIDENCE) -> dict:
    """Counts of each outcome and the win rate over judged (not invalid) rows with its bootstrap interval."""
    counts = {key: sum(row["outcome"] == key for row in rows) for key in ("win", "tie", "loss", "invalid")}
    scores = [OUTCOME_SCORES[row["outcome"]] for row in rows if row["outcome"] in OUTCOME_SCORES]
    win_rate = float(np.mean(scores)) if scores else None
    interval = list(bootstrap_interval(scores, np.mean, confidence)) if scores else None
    return {
        "n": len(rows),
        "judged": len(scores),
        **counts,
        "inconsistent": sum(bool(row["inconsistent"]) for row in rows),
        "win_rate": win_rate,
        "win_rate_interval": interval,
        "confidence": confidence,
    }


def _judge_name(generator: TextGenerator) -> str:
    name = getattr(generator, "model_name", None) or getattr(generator, "model", None)
    return str(name) if isinstance(name, str) else type(generator).__name__


# ---------------------------------------------------------------- run directories


def _samples(run_dir: str | Path) -> list[dict]:
    run = RunDir(Path(run_dir))
    if not run.samples.is_file():
        raise TuneloopError(
            f"{run.samples}: not found. The evaluate stage writes it; run `tuneloop evaluate` on {run_dir} first."
        )
    return read_jsonl(run.samples)


def judge_run(run_dir: str | Path, generator: TextGenerator | None = None, limit: int | None = None) -> dict:
    """Judge a run's tuned answers against its baseline answers (samples.jsonl); writes and returns judge.json.

    Rows keep the order of samples.jsonl, so `rows[i]` judges sample i. `limit` judges the first rows only.
    """
    samples = _samples(run_dir)[:limit]
    missing = [i + 1 for i, sample in enumerate(samples) if sample.get("baseline") is None]
    if missing:
        raise TuneloopError(
            f"{run_dir}: {len(missing)} sample(s) have no baseline answer (first: row {missing[0]} of samples.jsonl),"
            " so there is nothing to judge the tuned answers against. Evaluate with evaluate.baseline on, or "
            "compare two runs with judge_runs."
        )
    result = judge_pairs(
        [sample["prompt"] for sample in samples],
        [sample["tuned"] for sample in samples],
        [sample["baseline"] for sample in samples],
        [sample.get("reference") for sample in samples],
        generator,
    )
    result = {"first": "tuned", "second": "baseline", "run": str(run_dir), **result}
    write_json(Path(run_dir) / JUDGE_FILE, result)
    return result


def judge_runs(run_a: str | Path, run_b: str | Path, generator: TextGenerator | None = None,
               limit: int | None = None) -> dict:
    """Judge run A's tuned answers against run B's on the prompts both runs evaluated (matched by prompt).

    A win is a win for run A. Prompts only one run has are counted (`only_in_a`, `only_in_b`), not judged.
    """
    by_prompt_b = _first_sample_per_prompt(_samples(run_b))
    by_prompt_a = _first_sample_per_prompt(_samples(run_a))
    shared = [key for key in by_prompt_a if key in by_prompt_b]
    if not shared:
        raise TuneloopError(
            f"{run_a} and {run_b} share no evaluated prompt, so there is nothing to compare. Evaluate both runs "
            "on the same test file (evaluate --data FILE)."
        )
    pairs = [(by_prompt_a[key], by_prompt_b[key]) for key in shared[:limit]]
    result = judge_pairs(
        [a["prompt"] for a, _ in pairs],
        [a["tuned"] for a, _ in pairs],
        [b["tuned"] for _, b in pairs],
        [a.get("reference") or b.get("reference") for a, b in pairs],
        generator,
    )
    return {
        "first": str(run_a),
        "second": str(run_b),
        "shared_prompts": len(shared),
        "only_in_a": len(by_prompt_a.keys() - by_prompt_b.keys()),
        "only_in_b": len(by_prompt_b.keys() - by_prompt_a.keys()),
        **result,
    }


def _first_sample_per_prompt(samples: list[dict]) -> dict[str, dict]:
    keyed: dict[str, dict] = {}
    for sample in samples:
        keyed.setdefault(json.dumps(sample["prompt"], sort_keys=True, ensure_ascii=False), sample)
    return keyed
