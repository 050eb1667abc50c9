"""Augmenting training files: EDA and WordNet synonyms, model paraphrase and back-translation, tags and counts."""

from __future__ import annotations

import csv
import json
import random
import shutil
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tuneloop.data.augment import augment_file, augment_text, is_augmented
from tuneloop.data.load import read_rows
from tuneloop.data.rows import Row
from tuneloop.data.wordnet import (
    LEXNAMES_MAN_PAGE,
    derive_lexnames,
    lexnames_from_data_files,
    lexnames_from_man_page,
    wordnet,
)
from tuneloop.errors import DataError, ModelError
from tuneloop.models.generators import LocalGenerator, OpenAIGenerator
from tuneloop.workspace import cache_root

SENTENCES = [
    "The happy dog quickly ran across the green field.",
    "When do the Larkspur stores open on holidays?",
    "Please explain how the warranty covers a broken frame.",
]


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    """Build the WordNet reader directory in a temporary cache, not in the user's ~/.cache."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TUNELOOP_HOME", str(tmp_path_factory.mktemp("tuneloop_home")))
        patch.delenv("TUNELOOP_WORDNET", raising=False)
        yield


@pytest.fixture(scope="module")
def wn(private_cache):
    try:
        return wordnet()
    except DataError as exc:
        pytest.skip(f"WordNet is not installed; `apt-get install wordnet-base` to run this test ({exc})")


class RecordingGenerator:
    """A stand-in model: answers each prompt with `reply(text of the prompt)` and records every call."""

    def __init__(self, reply):
        self.reply = reply
        self.calls: list[list[str]] = []

    def generate(self, prompts: list[str]) -> list[str]:
        self.calls.append(list(prompts))
        return [self.reply(prompt.rsplit("\n\n", 1)[1]) for prompt in prompts]


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _chat(question: str, reply: str) -> dict:
    return {"messages": [
        {"role": "system", "content": "You help customers."},
        {"role": "user", "content": question},
        {"role": "assistant", "content": reply},
    ]}


def _one_word_replacements(before: str, after: str) -> list[tuple[str, str]]:
    """Every (word, replacement) that turns `before` into `after`; "field" -> "field of honor" has two readings."""
    old, new = before.split(), after.split()
    readings = []
    for index in range(len(old)):
        end = len(new) - (len(old) - 1 - index)
        if old[:index] == new[:index] and old[index + 1 :] == new[end:]:
            readings.append((old[index], " ".join(new[index:end])))
    return readings


def _lemmas(wn, word: str) -> set[str]:
    return {lemma.replace("_", " ").lower() for synset in wn.synsets(word.lower()) for lemma in synset.lemma_names()}


# ---------------------------------------------------------------- texts


def test_eda_changes_most_texts_keeps_them_non_empty_and_depends_only_on_the_seed(wn):
    changed = 0
    for seed in range(10):
        for sentence in SENTENCES:
            first = augment_text(sentence, "eda", random.Random(seed))
            assert first.strip()
            assert augment_text(sentence, "eda", random.Random(seed)) == first
            changed += first != sentence
    assert changed >= 20  # deletion at p=0.1 can leave a short sentence as it was; the rest always change


def test_eda_keeps_punctuation_in_place_and_line_breaks(wn):
    for seed in range(20):
        quoted = augment_text('"When do the stores open?"', "eda", random.Random(seed))
        assert quoted.startswith('"') and quoted.endswith('?"'), quoted
        assert quoted[1].isupper(), quoted
        assert augment_text("Hello, wonderful world.", "eda", random.Random(seed)).endswith("."), seed
        assert "\n" in augment_text("Line one is here\nand line two is there.", "eda", random.Random(seed))


def test_synonym_replacement_takes_a_wordnet_synonym_of_the_replaced_word(wn):
    sentence = "The happy dog quickly ran across the green field"
    for seed in range(8):
        result = augment_text(sentence, "synonym", random.Random(seed))
        assert result != sentence
        readings = _one_word_replacements(sentence, result)
        assert any(new.lower() in _lemmas(wn, old) for old, new in readings), result


def test_synonym_keeps_the_case_of_the_first_letter_and_skips_words_without_synonyms(wn):
    assert augment_text("Happy", "synonym", random.Random(0))[0].isupper()
    assert augment_text("Xyzzy plugh frobnitz", "synonym", random.Random(0)) == "Xyzzy plugh frobnitz"


def test_unknown_method_is_a_data_error():
    with pytest.raises(DataError, match="eda, synonym, paraphrase, back-translate"):
        augment_text("text", "shuffle", random.Random(0))


# ---------------------------------------------------------------- WordNet set-up


def test_the_reader_directory_is_built_in_the_cache_with_a_lexnames_file(wn):
    lexnames = (cache_root() / "wordnet" / "lexnames").read_text(encoding="utf-8").splitlines()
    assert lexnames[0].split("\t") == ["00", "adj.all", "3"]
    assert wn.synsets("dog")[0].lexname() == "noun.animal"


def test_missing_wordnet_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNELOOP_WORDNET", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="apt-get install wordnet-base"):
        augment_text("Some words here", "synonym", random.Random(0))


def test_lexnames_come_from_the_installed_man_page():
    if not LEXNAMES_MAN_PAGE.is_file():
        pytest.skip(f"{LEXNAMES_MAN_PAGE} is not installed (comes with `apt-get install wordnet-base`)")
    rows = lexnames_from_man_page(LEXNAMES_MAN_PAGE)
    assert len(rows) == 45
    assert rows[0] == (0, "adj.all") and rows[18] == (18, "noun.person") and rows[44] == (44, "adj.ppl")
    assert derive_lexnames(Path("/unused")).splitlines()[5] == "05\tnoun.animal\t1"


def test_lexnames_fall_back_to_the_numbers_in_the_data_files(tmp_path):
    header = "  1 This software and database is being provided to you, the LICENSEE\n"
    (tmp_path / "data.noun").write_text(header + "00001740 03 n 01 entity 0 000 | that which exists\n")
    (tmp_path / "data.verb").write_text(header + "00001740 29 v 01 breathe 0 000 | draw air\n")
    (tmp_path / "data.adj").write_text(header + "00001740 00 a 01 able 0 000 | having power\n")
    (tmp_path / "data.adv").write_text(header + "00001740 02 r 01 barely 0 000 | only just\n")
    rows = lexnames_from_data_files(tmp_path)
    assert [number for number, _ in rows] == list(range(30))
    assert rows[0] == (0, "adj.file00") and rows[3] == (3, "noun.file03") and rows[29] == (29, "verb.file29")
    lines = derive_lexnames(tmp_path, man_page=tmp_path / "missing.5WN.gz").splitlines()
    assert lines[2] == "02\tadv.file02\t4" and len(lines) == 30


# ---------------------------------------------------------------- files


def test_chat_copies_change_only_user_messages_and_are_tagged(wn, tmp_path):
    rows = [_chat(q, "Here is the answer you asked for.") for q in SENTENCES]
    src = _write_jsonl(tmp_path / "train.jsonl", rows)
    summary = augment_file(src, tmp_path / "out.jsonl", "eda", n=2, seed=3)
    out = _read_jsonl(tmp_path / "out.jsonl")
    assert out[:3] == rows and not any(is_augmented(row) for row in out[:3])
    copies = out[3:]
    assert copies and all(is_augmented(row) for row in copies)
    for copy in copies:
        assert copy["augmented"]["method"] == "eda"
        source = rows[copy["augmented"]["source_row"] - 1]
        assert copy["messages"][0] == source["messages"][0] and copy["messages"][2] == source["messages"][2]
        assert copy["messages"][1]["content"] != source["messages"][1]["content"]
    assert summary == {"rows_in": 3, "rows_out": 3 + len(copies), "augmented": len(copies),
                       "unchanged_skipped": 6 - len(copies), "bad_rows_skipped": 0, "method": "eda"}


def test_the_same_seed_writes_the_same_file(wn, tmp_path):
    src = _write_jsonl(tmp_path / "train.jsonl", [{"text": s} for s in SENTENCES])
    augment_file(src, tmp_path / "a.jsonl", "synonym", n=2, seed=7)
    augment_file(src, tmp_path / "b.jsonl", "synonym", n=2, seed=7)
    augment_file(src, tmp_path / "c.jsonl", "synonym", n=2, seed=8)
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    assert (tmp_path / "a.jsonl").read_text() != (tmp_path / "c.jsonl").read_text()


def test_classification_csv_keeps_its_columns_and_labels(wn, tmp_path):
    src = tmp_path / "intents.csv"
    with src.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "label"])
        writer.writerows([[str(i), sentence, f"intent{i}"] for i, sentence in enumerate(SENTENCES)])
    summary = augment_file(src, tmp_path / "out.csv", "synonym", n=1)
    with (tmp_path / "out.csv").open(encoding="utf-8") as handle:
        assert next(csv.reader(handle)) == ["id", "text", "label", "augmented_method", "augmented_source_row"]
    out = [item for item in read_rows(tmp_path / "out.csv") if isinstance(item, Row)]
    assert len(out) == summary["rows_out"] == 3 + summary["augmented"] and summary["augmented"] > 0
    originals, copies = out[:3], out[3:]
    assert not any(is_augmented(row.fields) for row in originals)
    for copy in copies:
        assert is_augmented(copy.fields) and copy.fields["augmented_method"] == "synonym"
        source = originals[int(copy.fields["augmented_source_row"]) - 1].fields
        assert copy.fields["label"] == source["label"] and copy.fields["id"] == source["id"]
        assert copy.fields["text"] != source["text"]


def test_paraphrase_rewrites_the_prompt_and_leaves_the_completion(tmp_path):
    rows = [{"prompt": "What does a tune-up cost?", "completion": "A tune-up costs $65."}]
    src = _write_jsonl(tmp_path / "train.jsonl", rows)
    generator = RecordingGenerator(lambda text: f"In other words: {text}")
    summary = augment_file(src, tmp_path / "out.jsonl", "paraphrase", n=1, generator=generator)
    [prompts] = generator.calls
    assert prompts == ["Paraphrase the following text. Keep its meaning, change the wording. Reply with the "
                       "paraphrase only.\n\nWhat does a tune-up cost?"]
    copy = _read_jsonl(tmp_path / "out.jsonl")[1]
    assert copy == {"prompt": "In other words: What does a tune-up cost?", "completion": "A tune-up costs $65.",
                    "augmented": {"method": "paraphrase", "source_row": 1}}
    assert summary["augmented"] == 1


def test_summarization_rows_get_their_document_rewritten_and_keep_the_summary(tmp_path):
    rows = [{"dialogue": "#Person1#: When do you open?\n#Person2#: At 7:30.", "summary": "They open at 7:30."}]
    src = _write_jsonl(tmp_path / "train.jsonl", rows)
    generator = RecordingGenerator(lambda text: f"Reworded: {text}")
    augment_file(src, tmp_path / "out.jsonl", "paraphrase", n=1, generator=generator)
    copy = _read_jsonl(tmp_path / "out.jsonl")[1]
    assert copy["dialogue"] == "Reworded: #Person1#: When do you open?\n#Person2#: At 7:30."
    assert copy["summary"] == "They open at 7:30."


def test_back_translation_goes_through_the_pivot_language_and_back(tmp_path):
    rows = [{"instruction": "Summarise the text.", "input": "Shops close on Wednesday.", "output": "Closed Wed."},
            {"instruction": "Name the head office city.", "input": "", "output": "Bergen"}]
    src = _write_jsonl(tmp_path / "train.jsonl", rows)
    generator = RecordingGenerator(lambda text: f"[{text}]")
    augment_file(src, tmp_path / "out.jsonl", "back-translate", n=1, generator=generator, pivot="German")
    there, back = generator.calls
    assert len(there) == 3 and all("into German" in prompt for prompt in there)
    assert there[1].endswith("Shops close on Wednesday.")
    assert all("into English" in prompt for prompt in back) and back[1].endswith("[Shops close on Wednesday.]")
    copies = _read_jsonl(tmp_path / "out.jsonl")[2:]
    assert copies[0]["instruction"] == "[[Summarise the text.]]"
    assert copies[0]["input"] == "[[Shops close on Wednesday.]]"
    assert copies[0]["output"] == "Closed Wed." and copies[1]["input"] == "" and copies[1]["output"] == "Bergen"


def test_unchanged_and_repeated_augmentations_are_skipped_and_counted(tmp_path):
    src = _write_jsonl(tmp_path / "train.jsonl", [{"text": s} for s in SENTENCES])
    echo = RecordingGenerator(lambda text: text)
    summary = augment_file(src, tmp_path / "echo.jsonl", "paraphrase", n=2, generator=echo)
    assert summary["augmented"] == 0 and summary["unchanged_skipped"] == 6 and summary["rows_out"] == 3
    blank = RecordingGenerator(lambda text: " ")
    assert augment_file(src, tmp_path / "blank.jsonl", "paraphrase", n=1, generator=blank)["unchanged_skipped"] == 3
    same_every_time = RecordingGenerator(lambda text: text.upper())
    summary = augment_file(src, tmp_path / "same.jsonl", "paraphrase", n=3, generator=same_every_time)
    assert summary["augmented"] == 3 and summary["unchanged_skipped"] == 6


def test_bad_rows_are_left_out_and_counted(tmp_path):
    src = tmp_path / "train.jsonl"
    src.write_text('{"prompt": "Hi?", "completion": "Hello."}\n{broken\n{"prompt": "No reply"}\n'
                   '{"prompt": "Bye?", "completion": "Goodbye."}\n', encoding="utf-8")
    summary = augment_file(src, tmp_path / "out.jsonl", "paraphrase", n=1,
                           generator=RecordingGenerator(lambda text: text + " (reworded)"))
    assert summary["rows_in"] == 4 and summary["bad_rows_skipped"] == 2
    assert summary["rows_out"] == 4 and [row["prompt"] for row in _read_jsonl(tmp_path / "out.jsonl")] == [
        "Hi?", "Bye?", "Hi? (reworded)", "Bye? (reworded)"]


def test_augmented_rows_are_not_augmented_again(tmp_path):
    src = _write_jsonl(tmp_path / "train.jsonl", [{"text": "one"}, {"text": "two"}])
    generator = RecordingGenerator(lambda text: text + "!")
    augment_file(src, tmp_path / "once.jsonl", "paraphrase", n=1, generator=generator)
    summary = augment_file(tmp_path / "once.jsonl", tmp_path / "twice.jsonl", "paraphrase", n=1, generator=generator)
    assert summary["rows_in"] == 4 and summary["augmented"] == 2
    assert [row["text"] for row in _read_jsonl(tmp_path / "twice.jsonl")] == ["one", "two", "one!", "two!", "one!",
                                                                                "two!"]


def test_preference_data_cannot_be_augmented(tmp_path):
    src = _write_jsonl(tmp_path / "prefs.jsonl", [{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}])
    with pytest.raises(DataError, match="preference"):
        augment_file(src, tmp_path / "out.jsonl", "eda", n=1)


def test_chat_rows_cannot_be_written_to_csv(tmp_path):
    src = _write_jsonl(tmp_path / "train.jsonl", [_chat("Hi?", "Hello.")])
    with pytest.raises(DataError, match="write .jsonl"):
        augment_file(src, tmp_path / "out.csv", "paraphrase", n=1, generator=RecordingGenerator(str.upper))


# ---------------------------------------------------------------- OpenAI-compatible endpoint


class _ChatCompletions(BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
        if self.server.fail:
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"model overloaded")
            return
        reply = json.dumps({"choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": f" reworded: {body['messages'][0]['content'][-5:]} "}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def endpoint(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ChatCompletions)
    server.requests, server.fail = [], False
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_openai_generator_posts_a_chat_completion_per_prompt(endpoint):
    base_url = f"http://127.0.0.1:{endpoint.server_port}/v1/"
    generator = OpenAIGenerator(base_url, "tiny-chat", api_key="sk-test", timeout=10)
    assert generator.generate(["first prompt", "second prompt"]) == ["reworded: rompt", "reworded: rompt"]
    first = endpoint.requests[0]
    assert first["path"] == "/v1/chat/completions"
    assert first["headers"]["Authorization"] == "Bearer sk-test"
    assert first["headers"]["Content-Type"] == "application/json"
    assert first["body"]["model"] == "tiny-chat"
    assert first["body"]["messages"] == [{"role": "user", "content": "first prompt"}]
    assert isinstance(first["body"]["temperature"], float)


def test_openai_generator_reports_http_errors(endpoint):
    endpoint.fail = True
    generator = OpenAIGenerator(f"http://127.0.0.1:{endpoint.server_port}/v1", "tiny-chat", timeout=10)
    with pytest.raises(DataError, match="HTTP 500: model overloaded"):
        generator.generate(["prompt"])
    assert "Authorization" not in endpoint.requests[0]["headers"]


def test_openai_generator_names_the_url_it_cannot_reach():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free now, closed (so refusing connections) once the block ends
    generator = OpenAIGenerator(f"http://127.0.0.1:{port}/v1", "tiny-chat", timeout=5)
    with pytest.raises(DataError, match=f"http://127.0.0.1:{port}/v1/chat/completions"):
        generator.generate(["prompt"])


# ---------------------------------------------------------------- local model


def test_local_generator_renders_chat_prompts_and_loads_the_model_once(tiny_model_dir):
    generator = LocalGenerator(str(tiny_model_dir), max_new_tokens=4, device="cpu")
    replies = generator.generate(["Paraphrase: the shop opens at 7:30.", "Translate: hello"])
    assert len(replies) == 2 and all(isinstance(reply, str) for reply in replies)
    model = generator._model
    generator.generate(["again"])
    assert generator._model is model


def test_local_generator_needs_a_chat_template(tiny_model_dir, tmp_path):
    base = shutil.copytree(tiny_model_dir, tmp_path / "base")
    (base / "chat_template.jinja").unlink(missing_ok=True)
    config = json.loads((base / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (base / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelError, match="no chat template"):
        LocalGenerator(str(base), device="cpu").generate(["hi"])
