"""The evaluate stage for token-classification (NER) runs: the tuned tagger against the word-lexicon baseline.

An untuned encoder has a random tagging head, so "the untuned model" says nothing; the honest floor is
the tagger that gives each word its most frequent training tag (O for unseen words; see
`tuneloop.evaluate.token_classification`). Both tag the same held-out sentences: the test split, or
the validation split when there is none. The model's prediction for a word is its prediction on the
word's first sub-word; a word truncation left without sub-words is predicted O and counted.
Writes metrics.json in the shape of the other stages (baseline, tuned, delta, intervals and the paired
test on entity F1, and under "token_classification" per-type scores) and samples.jsonl (each sentence
with its gold, baseline and tuned entities, and the tags per word).
"""

from __future__ import annotations

import gc

from tuneloop.config.schema import RunConfig
from tuneloop.data.labels import check_known_types
from tuneloop.evaluate.heldout import heldout_examples
from tuneloop.evaluate.token_classification import (
    SUMMARY_METRICS,
    entities_text,
    entity_scores,
    f1_intervals,
    lexicon_tags,
    most_frequent_tags,
)
from tuneloop.models.device import pick_device, pick_dtype
from tuneloop.models.load import load_tuned_classifier
from tuneloop.models.registry import resolve_model
from tuneloop.workspace import RunDir, read_jsonl, write_json, write_jsonl

BASELINE_KIND = "most frequent training tag per word (unseen words: O)"


def evaluate_token_classifier(config: RunConfig, run: RunDir, data_file: str | None = None,
                              console_print=print) -> dict:
    device = pick_device(config.model.device)
    dtype = pick_dtype(device, config.model.dtype)
    model, tokenizer = load_tuned_classifier(run, resolve_model(config.model.name, console_print), dtype, device)
    tags = [model.config.id2label[i] for i in range(model.config.num_labels)]

    heldout, heldout_name = heldout_examples(config, run, data_file)
    check_known_types(heldout, tags, heldout_name.split(" ")[0])
    sentences = [row["tokens"] for row in heldout]
    gold = [row["tags"] for row in heldout]
    predicted, unpredicted_words = predict_word_tags(model, tokenizer, sentences, config.data.max_length,
                                                     config.evaluate.batch_size)
    lexicon = most_frequent_tags(read_jsonl(run.split("train")))
    baseline_predicted = [lexicon_tags(lexicon, words) for words in sentences]
    console_print(f"evaluate: {len(heldout)} {heldout_name} sentences; baseline: {BASELINE_KIND}, "
                  f"{len(lexicon)} words known")
    if unpredicted_words:
        console_print(f"evaluate: {unpredicted_words} word(s) lost to data.max_length={config.data.max_length} "
                      "were predicted O (raise data.max_length to tag them)")

    tuned, baseline = entity_scores(gold, predicted), entity_scores(gold, baseline_predicted)
    results = {
        "task": "token classification",
        "heldout": {"split": heldout_name, "rows": len(heldout), "rows_with_answer": 0},
        "validation": {"rows": len(read_jsonl(run.split("validation")))},
        "baseline_kind": BASELINE_KIND,
        "baseline": {key: baseline[key] for key in SUMMARY_METRICS},
        "tuned": {key: tuned[key] for key in SUMMARY_METRICS},
    }
    results["delta"] = {key: results["tuned"][key] - results["baseline"][key] for key in SUMMARY_METRICS}
    if config.evaluate.intervals:
        found = f1_intervals(baseline["counts"], tuned["counts"])
        results["intervals"] = {side: {"entity_f1": interval} for side, interval in found["intervals"].items()}
        results["comparison"] = {"entity_f1": found["comparison"]}
    results["token_classification"] = {
        "entities": sum(count[2] for count in tuned["counts"]),
        "words": sum(len(words) for words in sentences),
        "words_predicted_o_after_truncation": unpredicted_words,
        "per_type": {"tuned": tuned["per_type"], "baseline": baseline["per_type"]},
    }
    results["status"], results["failures"] = "passed", []
    write_json(run.metrics, results)
    write_jsonl(run.samples, [
        {"prompt": [{"role": "user", "content": " ".join(words)}], "reference": entities_text(words, truth),
         "answer": None, "baseline": entities_text(words, base), "tuned": entities_text(words, guess),
         "tokens": words, "tags": truth, "baseline_tags": base, "tuned_tags": guess}
        for words, truth, base, guess in zip(sentences, gold, baseline_predicted, predicted, strict=True)
    ])
    del model
    gc.collect()
    return results


def predict_word_tags(model, tokenizer, sentences: list[list[str]], max_length: int,
                      batch_size: int) -> tuple[list[list[str]], int]:
    """One tag per word (the prediction on its first sub-word) and how many words truncation left untagged (O).

    Sentences run in order of length so a batch pads little; the result comes back in the given order.
    """
    import torch

    device = next(model.parameters()).device
    id2label = model.config.id2label
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    tagged: list[list[str]] = [[] for _ in sentences]
    untagged = 0
    with torch.inference_mode():
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            encoded = tokenizer([sentences[i] for i in batch], is_split_into_words=True, truncation=True,
                                max_length=max_length, padding=True, return_tensors="pt")
            best = model(**encoded.to(device)).logits.argmax(-1).cpu().tolist()
            for row, index in enumerate(batch):
                tags = ["O"] * len(sentences[index])
                seen = set()
                for position, word in enumerate(encoded.word_ids(row)):
                    if word is not None and word not in seen:
                        tags[word] = id2label[best[row][position]]
                        seen.add(word)
                untagged += len(tags) - len(seen)
                tagged[index] = tags
    return tagged, untagged
