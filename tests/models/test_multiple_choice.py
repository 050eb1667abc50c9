"""Multiple-choice harness: parsing each file shape, lm-eval's context/continuation split, log-likelihoods
checked against a plain unbatched forward pass, acc vs acc_norm, batching, limit, and bench."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from tuneloop.errors import DataError
from tuneloop.evaluate.bench import bench
from tuneloop.models import multiple_choice as mc
from tuneloop.models.multiple_choice import (
    MCQuestion,
    choice_loglikelihoods,
    detect_format,
    encode_pair,
    hellaswag_preprocess,
    load_questions,
    score_multiple_choice,
)


def write_jsonl(path: Path, rows: list[dict | str]) -> Path:
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def arc_row(stem: str, texts: list[str], labels: list[str], key: str) -> dict:
    choices = [{"text": text, "label": label} for text, label in zip(texts, labels, strict=True)]
    return {"id": "q", "question": {"stem": stem, "choices": choices}, "answerKey": key}


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(tiny_model_dir)


QUESTIONS = [
    MCQuestion("Question: When do the stores open?\nAnswer:", ["7:30", "at noon on Wednesday", "never"], 0),
    MCQuestion("Question: Where is the head office?\nAnswer:", ["Bergen", "in a small town far away"], 1),
    MCQuestion("How long is the warranty? The warranty lasts", ["7 years", "one", "a very long time indeed", "2"], 2),
]


# ---------------------------------------------------------------- parsing


def test_arc_letter_key_and_prompt_match_lm_eval(tmp_path):
    path = write_jsonl(tmp_path / "arc.jsonl", [arc_row("Which is a gas?", ["ice", "steam", "rock"], list("ABC"), "B")])
    [question] = load_questions(path)
    assert detect_format(path) == "arc"
    assert question == MCQuestion("Question: Which is a gas?\nAnswer:", ["ice", "steam", "rock"], 1)


def test_arc_digit_labels_map_the_key_through_the_labels(tmp_path):
    row = arc_row("Pick three.", ["one", "two", "three", "four"], ["1", "2", "3", "4"], "3")
    [question] = load_questions(write_jsonl(tmp_path / "arc.jsonl", [row]))
    assert question.answer == 2


def test_arc_hf_export_shape(tmp_path):
    row = {"question": "Which is hot?", "choices": {"text": ["sun", "snow"], "label": ["A", "B"]}, "answerKey": "A"}
    [question] = load_questions(write_jsonl(tmp_path / "arc.jsonl", [row]))
    assert question == MCQuestion("Question: Which is hot?\nAnswer:", ["sun", "snow"], 0)


def test_hellaswag_applies_lm_eval_preprocessing(tmp_path):
    row = {
        "activity_label": "Making tea",
        "ctx_a": "A man boils water [title] in a kettle.",
        "ctx_b": "he POURS it",
        "endings": ["into a cup.", " onto  the floor. ", "[header] away.", "nowhere."],
        "label": "1",
    }
    [question] = load_questions(write_jsonl(tmp_path / "hs.jsonl", [row]))
    assert detect_format(tmp_path / "hs.jsonl") == "hellaswag"
    # capitalize() lowercases the rest of ctx_b, exactly as lm-eval's utils.process_docs does
    assert question.context == "Making tea: A man boils water. in a kettle. He pours it"
    assert question.choices == ["into a cup.", "onto the floor.", " away.", "nowhere."]  # lm-eval keeps that space
    assert question.answer == 1


def test_hellaswag_preprocess_drops_brackets_and_double_spaces():
    assert hellaswag_preprocess(" Step one [title] Do it [step] now  please ") == "Step one. Do it now please"


def test_hellaswag_ending_that_preprocesses_to_nothing_is_a_bad_row(tmp_path):
    row = {"activity_label": "Tea", "ctx_a": "Boil water.", "ctx_b": "", "endings": ["[header]", "pour."], "label": 1}
    path = write_jsonl(tmp_path / "hs.jsonl", [row])
    with pytest.raises(DataError, match=f"{path}:1: an ending is empty once its"):
        load_questions(path)


def test_piqa(tmp_path):
    row = {"goal": "Open a jar", "sol1": "twist the lid", "sol2": "hit it with a hammer", "label": 0}
    [question] = load_questions(write_jsonl(tmp_path / "piqa.jsonl", [row]))
    assert detect_format(tmp_path / "piqa.jsonl") == "piqa"
    assert question == MCQuestion("Question: Open a jar\nAnswer:", ["twist the lid", "hit it with a hammer"], 0)


@pytest.mark.parametrize(("answer", "expected"), [(2, 2), ("blue", 1), ("C", 2), ("a", 0)])
def test_generic_mc_answer_as_index_text_or_letter(tmp_path, answer, expected):
    row = {"question": "Sky colour?", "choices": ["red", "blue", "green"], "answer": answer}
    [question] = load_questions(write_jsonl(tmp_path / "mc.jsonl", [row]))
    assert detect_format(tmp_path / "mc.jsonl") == "mc"
    assert question == MCQuestion("Question: Sky colour?\nAnswer:", ["red", "blue", "green"], expected)


def test_bad_rows_raise_one_error_naming_each_file_line(tmp_path):
    rows = [
        arc_row("Fine.", ["a", "b"], list("AB"), "A"),
        arc_row("Key missing from labels.", ["a", "b"], list("AB"), "E"),
        "{not json",
    ]
    path = write_jsonl(tmp_path / "arc.jsonl", rows)
    with pytest.raises(DataError) as raised:
        load_questions(path)
    message = str(raised.value)
    assert f"{path}:2: answerKey 'E' is not one of the choice labels A, B" in message
    assert f"{path}:3: not valid JSON" in message


@pytest.mark.parametrize(
    ("row", "problem"),
    [
        ({"question": "Q?", "choices": ["a", "b"], "answer": 5}, "'answer' must be a choice index from 0 to 1"),
        ({"question": "Q?", "choices": ["a", "b"], "answer": "z"}, "'answer' 'z' is neither one of the choices"),
        ({"question": "Q?", "choices": ["only one"], "answer": 0}, "'choices' must be a list of at least two"),
    ],
)
def test_generic_mc_bad_answers(tmp_path, row, problem):
    path = write_jsonl(tmp_path / "mc.jsonl", [row])
    with pytest.raises(DataError, match=f"{path}:1: {problem}"):
        load_questions(path, fmt="mc")


def test_unknown_shape_is_reported(tmp_path):
    path = write_jsonl(tmp_path / "x.jsonl", [{"text": "hello"}])
    with pytest.raises(DataError, match=r"x\.jsonl:1: cannot tell the multiple-choice format"):
        load_questions(path)


def test_limit_reads_only_the_first_questions(tmp_path):
    rows = [arc_row(f"Q{i}?", ["a", "b"], list("AB"), "A") for i in range(5)] + ["{broken"]
    questions = load_questions(write_jsonl(tmp_path / "arc.jsonl", rows), limit=3)
    assert [q.context for q in questions] == [f"Question: Q{i}?\nAnswer:" for i in range(3)]


# ---------------------------------------------------------------- tokenization and scoring


def test_encode_pair_splits_the_whole_encoding_at_the_context_length(tiny):
    _, tokenizer = tiny
    context_ids, continuation_ids = encode_pair(tokenizer, "Question: Where?\nAnswer:", " Bergen")
    whole = tokenizer.encode("Question: Where?\nAnswer: Bergen")
    assert context_ids == tokenizer.encode("Question: Where?\nAnswer:")
    assert context_ids + continuation_ids == whole


def test_encode_pair_moves_trailing_spaces_of_the_context_onto_the_continuation(tiny):
    _, tokenizer = tiny
    context_ids, continuation_ids = encode_pair(tokenizer, "The office is in ", "Bergen")
    assert context_ids == tokenizer.encode("The office is in")
    assert continuation_ids == tokenizer.encode("The office is in Bergen")[len(context_ids) :]


def reference_loglikelihood(model, tokenizer, context: str, choice: str) -> float:
    """One unpadded forward pass over context + " " + choice; sum of log-probs of the choice's tokens."""
    context_length = len(tokenizer.encode(context))
    ids = torch.tensor([tokenizer.encode(context + " " + choice)])
    with torch.no_grad():
        log_probs = torch.log_softmax(model(input_ids=ids).logits[0].double(), dim=-1)
    return sum(float(log_probs[i - 1, ids[0, i]]) for i in range(context_length, ids.shape[1]))


def test_loglikelihoods_match_an_unbatched_reference(tiny):
    model, tokenizer = tiny
    scores = choice_loglikelihoods(model, tokenizer, QUESTIONS, batch_size=4)
    for question, question_scores in zip(QUESTIONS, scores, strict=True):
        expected = [reference_loglikelihood(model, tokenizer, question.context, c) for c in question.choices]
        assert question_scores == pytest.approx(expected, abs=1e-4)


def test_batch_size_does_not_change_results(tiny):
    model, tokenizer = tiny
    one = score_multiple_choice(model, tokenizer, QUESTIONS, batch_size=1)
    four = score_multiple_choice(model, tokenizer, QUESTIONS, batch_size=4)
    assert one == four
    unbatched = choice_loglikelihoods(model, tokenizer, QUESTIONS, batch_size=1)
    batched = choice_loglikelihoods(model, tokenizer, QUESTIONS, batch_size=4)
    assert sum(unbatched, []) == pytest.approx(sum(batched, []), abs=1e-5)


def test_scoring_leaves_a_training_model_in_training_mode(tiny):
    model, tokenizer = tiny
    model.train()
    try:
        score_multiple_choice(model, tokenizer, QUESTIONS[:1])
        assert model.training
    finally:
        model.eval()


def test_acc_norm_divides_by_choice_characters_and_can_change_the_winner(monkeypatch):
    questions = [
        MCQuestion("Q1", ["no", "a much longer answer"], 1),  # 20 characters: -5/20 beats -2/2
        MCQuestion("Q2", ["yes", "no"], 0),
    ]
    fixed = [[-2.0, -5.0], [-1.0, -3.0]]
    monkeypatch.setattr(mc, "choice_loglikelihoods", lambda *args, **kwargs: fixed)
    result = score_multiple_choice(None, None, questions)
    assert result["correct"] == [False, True]
    assert result["correct_norm"] == [True, True]
    assert result["acc"] == 50.0
    assert result["acc_norm"] == 100.0
    assert result["n"] == 2


def test_ties_go_to_the_first_choice_like_numpy_argmax(monkeypatch):
    monkeypatch.setattr(mc, "choice_loglikelihoods", lambda *args, **kwargs: [[-1.0, -1.0]])
    result = score_multiple_choice(None, None, [MCQuestion("Q", ["ab", "cd"], 0)])
    assert result["correct"] == [True] and result["correct_norm"] == [True]


# ---------------------------------------------------------------- bench


@pytest.fixture()
def arc_file(tmp_path) -> Path:
    stems = ["When do the stores open?", "Where is the head office?", "How long is the warranty?", "Why?"]
    rows = [arc_row(stem, ["7:30", "Bergen", "7 years"], list("ABC"), "ABC"[i % 3]) for i, stem in enumerate(stems)]
    return write_jsonl(tmp_path / "arc.jsonl", rows)


def test_bench_on_a_model_directory(tiny_model_dir, arc_file):
    result = bench(str(tiny_model_dir), str(arc_file), limit=3, batch_size=4, device="cpu")
    assert result["format"] == "arc"
    assert result["n"] == 3
    assert 0.0 <= result["acc"] <= 100.0 and 0.0 <= result["acc_norm"] <= 100.0
    assert set(result) == {"model", "file", "format", "n", "acc", "acc_norm", "seconds"}


def test_bench_on_a_run_directory_scores_the_tuned_model(tiny_model_dir, tiny_config, arc_file, tmp_path):
    from conftest import write_config

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_config(run_dir / "config.yaml", tiny_config)
    shutil.copytree(tiny_model_dir, run_dir / "model")  # a full fine-tune's layout; same weights as the base
    from_run = bench(str(run_dir), str(arc_file), batch_size=4, device="cpu")
    from_dir = bench(str(tiny_model_dir), str(arc_file), batch_size=4, device="cpu")
    assert from_run["n"] == 4
    assert (from_run["acc"], from_run["acc_norm"]) == (from_dir["acc"], from_dir["acc_norm"])
