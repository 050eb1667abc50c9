"""Pairwise judging with scripted judges: both orders asked, verdicts combined, bias cancelled, invalid counted."""

from __future__ import annotations

import json
import re

import pytest

from tuneloop.errors import DataError, TuneloopError
from tuneloop.evaluate.judge import (
    combine_orders,
    judge_pairs,
    judge_prompt,
    judge_run,
    judge_runs,
    parse_verdict,
)

_ANSWERS = re.compile(r"### Answer A\n(.*?)\n\n### Answer B\n(.*?)\n\n### How to decide", re.DOTALL)


def answers_in(prompt: str) -> tuple[str, str]:
    return _ANSWERS.search(prompt).groups()


class KeywordJudge:
    """Prefers the answer containing `keyword`; TIE when both or neither do. Records every prompt it reads."""

    def __init__(self, keyword: str) -> None:
        self.keyword = keyword
        self.prompts: list[str] = []
        self.calls = 0

    def generate(self, prompts: list[str]) -> list[str]:
        self.calls += 1
        self.prompts.extend(prompts)
        replies = []
        for prompt in prompts:
            a_has, b_has = (self.keyword in answer for answer in answers_in(prompt))
            replies.append("Verdict: A" if a_has and not b_has else "[[B]]" if b_has and not a_has else "tie")
        return replies


class ScriptedJudge:
    """Replies with the given texts in order, whatever it is asked."""

    def __init__(self, replies: list[str]) -> None:
        self.replies = list(replies)

    def generate(self, prompts: list[str]) -> list[str]:
        answered, self.replies = self.replies[: len(prompts)], self.replies[len(prompts):]
        return answered


class AlwaysA:
    model_name = "always-a"

    def generate(self, prompts: list[str]) -> list[str]:
        return ["A"] * len(prompts)


# ---------------------------------------------------------------- prompt and parsing


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [
        ("A", "A"),
        ("b", "B"),
        ("TIE", "TIE"),
        ("tie.", "TIE"),
        ("[[A]]", "A"),
        ("Answer A", "A"),
        ("Verdict: B", "B"),
        ("**B** is better", "B"),
        ("It is a tie", "TIE"),
        ("Answer: a better one is B", "B"),
    ],
)
def test_parse_verdict_reads_the_verdict_token(reply, verdict):
    assert parse_verdict(reply) == verdict


@pytest.mark.parametrize("reply", ["", "I cannot decide.", "Both are fine", "Absolutely"])
def test_parse_verdict_returns_none_without_a_verdict(reply):
    assert parse_verdict(reply) is None


def test_judge_prompt_shows_question_reference_and_both_answers():
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of Norway?"}]
    prompt = judge_prompt(messages, "Oslo.", "Bergen.", reference="Oslo")
    assert "System: Be brief." in prompt and "User: Capital of Norway?" in prompt
    assert "Reference answer" in prompt and "Oslo" in prompt
    assert answers_in(prompt) == ("Oslo.", "Bergen.")
    assert "TIE" in prompt


def test_judge_prompt_leaves_out_the_reference_block_when_there_is_none():
    prompt = judge_prompt("Capital of Norway?", "Oslo.", "Bergen.")
    assert "Reference answer" not in prompt
    assert prompt.count("Capital of Norway?") == 1


# ---------------------------------------------------------------- combining orders


@pytest.mark.parametrize(
    ("first_as_a", "first_as_b", "outcome", "inconsistent"),
    [
        ("A", "B", "win", False),  # first wins both orders
        ("A", "TIE", "win", False),  # wins one, ties the other
        ("TIE", "B", "win", False),
        ("B", "A", "loss", False),
        ("TIE", "A", "loss", False),
        ("TIE", "TIE", "tie", False),
        ("A", "A", "tie", True),  # always the first position: position bias, not a preference
        ("B", "B", "tie", True),
        (None, "B", "invalid", False),
        ("A", None, "invalid", False),
    ],
)
def test_combine_orders(first_as_a, first_as_b, outcome, inconsistent):
    assert combine_orders(first_as_a, first_as_b) == (outcome, inconsistent)


# ---------------------------------------------------------------- judge_pairs


def test_judge_pairs_asks_every_pair_in_both_orders():
    judge = KeywordJudge("Oslo")
    judge_pairs(["q1", "q2", "q3"], ["Oslo", "x", "y"], ["Bergen", "Oslo", "z"], generator=judge, batch_size=4)
    assert len(judge.prompts) == 6
    assert judge.calls == 2  # batches of 4
    shown = [answers_in(prompt) for prompt in judge.prompts]
    for first, second in [("Oslo", "Bergen"), ("x", "Oslo"), ("y", "z")]:
        assert (first, second) in shown and (second, first) in shown


def test_judge_pairs_counts_wins_ties_and_losses():
    judge = KeywordJudge("Oslo")
    result = judge_pairs(
        ["q1", "q2", "q3", "q4"],
        ["Oslo.", "Bergen.", "Oslo.", "Bergen."],
        ["Bergen.", "Oslo.", "Oslo!", "Trondheim."],
        references=["Oslo"] * 4,
        generator=judge,
    )
    assert [row["outcome"] for row in result["rows"]] == ["win", "loss", "tie", "tie"]
    assert (result["win"], result["tie"], result["loss"], result["invalid"], result["inconsistent"]) == (1, 2, 1, 0, 0)
    assert result["n"] == result["judged"] == 4
    assert result["win_rate"] == pytest.approx((1 + 0.5 * 2) / 4)
    assert all("Reference answer" in prompt for prompt in judge.prompts)


def test_a_judge_that_always_says_a_gives_only_inconsistent_ties():
    result = judge_pairs(["q1", "q2"], ["good", "bad"], ["bad", "good"], generator=AlwaysA())
    assert (result["win"], result["tie"], result["loss"], result["inconsistent"]) == (0, 2, 0, 2)
    assert result["win_rate"] == 0.5
    assert result["judge"] == "always-a"


def test_unparseable_replies_are_counted_invalid_and_kept_out_of_the_win_rate():
    judge = ScriptedJudge(["A", "B", "I am not sure", "A", "B", "A"])
    result = judge_pairs(["q1", "q2", "q3"], ["x", "y", "z"], ["u", "v", "w"], generator=judge)
    assert [row["outcome"] for row in result["rows"]] == ["win", "invalid", "loss"]
    assert result["invalid"] == 1 and result["judged"] == 2 and result["n"] == 3
    assert result["rows"][1]["replies"] == ["I am not sure", "A"]
    assert result["rows"][1]["verdicts"] == [None, "A"]
    assert result["win_rate"] == 0.5


def test_all_invalid_gives_no_win_rate():
    result = judge_pairs(["q1"], ["x"], ["y"], generator=ScriptedJudge(["?", "?"]))
    assert result["invalid"] == 1 and result["win_rate"] is None and result["win_rate_interval"] is None


def test_win_rate_interval_contains_the_estimate_and_stays_in_0_1():
    keyword_first = ["Oslo"] * 9 + ["x"] * 6 + ["Oslo"] * 5
    keyword_second = ["x"] * 9 + ["Oslo"] * 6 + ["Oslo"] * 5
    result = judge_pairs([f"q{i}" for i in range(20)], keyword_first, keyword_second, generator=KeywordJudge("Oslo"))
    low, high = result["win_rate_interval"]
    assert 0.0 <= low <= result["win_rate"] <= high <= 1.0
    assert low < high
    again = judge_pairs([f"q{i}" for i in range(20)], keyword_first, keyword_second, generator=KeywordJudge("Oslo"))
    assert again["win_rate_interval"] == result["win_rate_interval"]  # seeded


def test_judge_pairs_rejects_lists_of_different_lengths():
    with pytest.raises(DataError, match="answers_second=1"):
        judge_pairs(["q1", "q2"], ["x", "y"], ["u"], generator=AlwaysA())


def test_judge_pairs_rejects_a_judge_that_answers_too_few_prompts():
    with pytest.raises(DataError, match="answered 1 of 2"):
        judge_pairs(["q1"], ["x"], ["y"], generator=ScriptedJudge(["A"]))


# ---------------------------------------------------------------- run directories


def sample(question: str, tuned: str, baseline: str | None, reference: str = "Oslo") -> dict:
    return {
        "prompt": [{"role": "system", "content": "You help."}, {"role": "user", "content": question}],
        "reference": reference,
        "answer": reference,
        "baseline": baseline,
        "tuned": tuned,
    }


def write_samples(run_dir, rows: list[dict]):
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "samples.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return run_dir


def test_judge_run_judges_tuned_against_baseline_and_writes_judge_json(tmp_path):
    run = write_samples(tmp_path / "run", [
        sample("Capital?", "Oslo.", "Bergen."),
        sample("Capital again?", "Bergen.", "Oslo."),
        sample("And once more?", "Oslo!", "Oslo."),
    ])
    result = judge_run(run, KeywordJudge("Oslo"), limit=2)
    assert (result["first"], result["second"]) == ("tuned", "baseline")
    assert [row["outcome"] for row in result["rows"]] == ["win", "loss"]
    written = json.loads((run / "judge.json").read_text(encoding="utf-8"))
    assert written["win"] == 1 and written["loss"] == 1 and written["n"] == 2


def test_judge_run_without_baseline_answers_says_so(tmp_path):
    run = write_samples(tmp_path / "run", [sample("Capital?", "Oslo.", None)])
    with pytest.raises(TuneloopError, match="no baseline answer"):
        judge_run(run, AlwaysA())


def test_judge_run_without_samples_says_to_evaluate_first(tmp_path):
    with pytest.raises(TuneloopError, match="tuneloop evaluate"):
        judge_run(tmp_path, AlwaysA())


def test_judge_runs_compares_tuned_answers_on_shared_prompts(tmp_path):
    run_a = write_samples(tmp_path / "a", [
        sample("Capital?", "Oslo.", "x"),
        sample("Only in A?", "Oslo.", "x"),
        sample("Shared two?", "Bergen.", "x"),
    ])
    run_b = write_samples(tmp_path / "b", [
        sample("Shared two?", "Oslo.", "y"),
        sample("Capital?", "Bergen.", "y"),
        sample("Only in B?", "Oslo.", "y"),
    ])
    judge = KeywordJudge("Oslo")
    result = judge_runs(run_a, run_b, judge)
    assert [row["outcome"] for row in result["rows"]] == ["win", "loss"]  # in run A's order
    assert (result["shared_prompts"], result["only_in_a"], result["only_in_b"]) == (2, 1, 1)
    assert not any("Only in" in prompt for prompt in judge.prompts)
    assert not (run_a / "judge.json").exists()


def test_judge_runs_without_shared_prompts_says_so(tmp_path):
    run_a = write_samples(tmp_path / "a", [sample("One?", "x", "x")])
    run_b = write_samples(tmp_path / "b", [sample("Two?", "y", "y")])
    with pytest.raises(TuneloopError, match="share no evaluated prompt"):
        judge_runs(run_a, run_b, AlwaysA())
