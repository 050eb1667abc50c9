"""The data audit: every check a careful practitioner runs by hand before training, in one JSON report.

The first file is the training file; any others are evaluation splits, checked for leakage from it.
The report's keys are stable and documented in docs/data-audit.md. Each check adds findings to
`summary` (severity, check, message), which the CLI and the HTML report show first.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from tuneloop.data.dedup import (
    exact_duplicate_groups,
    minhash_signatures,
    near_duplicate_pairs,
    near_matches_between,
    normalize_text,
)
from tuneloop.data.prepare import LoadedFile, load_examples
from tuneloop.data.text_fields import example_text, input_text, label_of, labels_of

REPORT_VERSION = 1
LANGUAGE_CONFIDENCE = 0.7
LANGUAGE_SAMPLE = 20_000  # rows checked for language at most, evenly spaced
LANGUAGE_CHARS = 400
_EMPTY_FIELD = re.compile(r"field '([^']+)' is empty")


@dataclass
class AuditOptions:
    format: str = "auto"
    near_threshold: float = 0.8  # estimated Jaccard similarity of character 5-grams
    max_examples: int = 5  # examples kept per finding
    tokenizer: object | None = None  # lengths in tokens when given, else in characters
    tokenizer_name: str | None = None
    max_length: int | None = None  # rows longer than this (in tokens) would be truncated
    expected_language: str = "en"
    max_rows: int = 200_000  # per file; beyond it the audit reads a prefix and says so (a 2 GB file streams)
    checks: tuple[str, ...] = ("duplicates", "leakage", "pii", "lengths", "labels", "language", "bias", "preference")
    show_progress: bool = True


@dataclass
class _Audit:
    options: AuditOptions
    report: dict = field(default_factory=dict)

    def finding(self, severity: str, check: str, message: str) -> None:
        self.report["summary"].append({"severity": severity, "check": check, "message": message})


def audit_files(paths: list[str | Path], options: AuditOptions | None = None) -> dict:
    """Audit a training file and, optionally, evaluation files; returns the report dict."""
    options = options or AuditOptions()
    loaded = [load_examples(p, options.format, skip_invalid=True, max_rows=options.max_rows) for p in paths]
    return audit_loaded(loaded, options)


def audit_loaded(loaded: list[LoadedFile], options: AuditOptions) -> dict:
    """The audit of files already read (the first is train): what `tuneloop run` calls on its data."""
    audit = _Audit(options, {"version": REPORT_VERSION, "summary": [], "files": []})
    train, evaluation = loaded[0], loaded[1:]
    steps = [
        ("files", lambda: _files(audit, loaded)),
        ("duplicates", lambda: _duplicates(audit, train)),
        ("leakage", lambda: _leakage(audit, train, evaluation)),
        ("pii", lambda: _pii(audit, loaded)),
        ("lengths", lambda: _lengths(audit, train)),
        ("labels", lambda: _labels(audit, loaded)),
        ("language", lambda: _language(audit, train)),
        ("bias", lambda: _bias(audit, train)),
        ("preference", lambda: _preference(audit, train)),
    ]
    chosen = [(name, run) for name, run in steps if name == "files" or name in options.checks]
    with tqdm(chosen, desc="audit", unit="check", disable=not options.show_progress, leave=False) as bar:
        for name, run in bar:
            bar.set_postfix_str(name)
            run()
    order = {"error": 0, "warning": 1, "info": 2}
    audit.report["summary"].sort(key=lambda item: order[item["severity"]])
    return audit.report


def _files(audit: _Audit, loaded: list[LoadedFile]) -> None:
    shown = audit.options.max_examples
    for role, file in zip(["train"] + ["evaluation"] * (len(loaded) - 1), loaded, strict=True):
        # Empty required fields made a row invalid; empty optional ones (e.g. alpaca's input) are counted too.
        empty = Counter(
            key for fields in file.raw_rows for key, value in fields.items()
            if isinstance(value, str) and not value.strip()
        )
        empty.update(match.group(1) for bad in file.bad_rows if (match := _EMPTY_FIELD.search(bad.reason)))
        audit.report["files"].append({
            "path": file.path,
            "role": role,
            "format": file.format,
            "rows": len(file.examples) + len(file.bad_rows),
            "valid_rows": len(file.examples),
            "invalid_rows": len(file.bad_rows),
            "invalid_examples": [str(bad) for bad in file.bad_rows[:shown]],
            "empty_fields": dict(empty),
            "read_first_rows_only": file.stopped_early,
        })
        if file.bad_rows:
            audit.finding("error", "invalid",
                          f"{file.path}: {len(file.bad_rows)} invalid row(s), e.g. {file.bad_rows[0]}")
        for note in file.notes:
            audit.finding("info", "tags", note)
        if empty:
            listed = ", ".join(f"{key} ({count})" for key, count in empty.most_common())
            audit.finding("info", "empty_fields", f"{file.path}: empty or whitespace-only fields: {listed}")
        if file.stopped_early:
            audit.finding("warning", "files", f"{file.path}: audited the first {audit.options.max_rows:,} rows only "
                          "(--max-rows reads more)")


def _duplicates(audit: _Audit, train: LoadedFile) -> None:
    texts = [example_text(ex) for ex in train.examples]
    groups = exact_duplicate_groups(texts)
    extra_copies = sum(len(g) - 1 for g in groups)
    # Near duplicates beyond the exact ones: the pairs that link two different normalized texts.
    near = [pair for pair in near_duplicate_pairs(texts, audit.options.near_threshold) if pair.similarity < 1.0
            or normalize_text(texts[pair.first]) != normalize_text(texts[pair.second])]
    near_rows = {i for pair in near for i in (pair.first, pair.second)}
    shown = audit.options.max_examples
    audit.report["duplicates"] = {
        "normalization": "Unicode NFKC, case-folded, whitespace collapsed",
        "exact": {
            "groups": len(groups),
            "duplicate_rows": extra_copies,  # rows that repeat an earlier row
            "examples": [[_located(train, i, texts) for i in group[:3]] for group in groups[:shown]],
        },
        "near": {
            "threshold": audit.options.near_threshold,
            "pairs": len(near),
            "rows": len(near_rows),
            "examples": [
                {"similarity": p.similarity, "a": _located(train, p.first, texts),
                 "b": _located(train, p.second, texts)}
                for p in sorted(near, key=lambda p: -p.similarity)[:shown]
            ],
        },
    }
    if extra_copies:
        audit.finding("warning", "duplicates",
                      f"{extra_copies} training row(s) repeat an earlier row after normalization "
                      f"({len(groups)} group(s)); `tuneloop data clean --dedup exact` removes them")
    if near:
        audit.finding("info", "duplicates",
                      f"{len(near)} near-duplicate pair(s) (Jaccard >= {audit.options.near_threshold}) "
                      f"across {len(near_rows)} training rows; `--dedup near` keeps one per cluster")


def _leakage(audit: _Audit, train: LoadedFile, evaluation: list[LoadedFile]) -> None:
    audit.report["leakage"] = {}
    if not evaluation:
        return
    train_inputs = [input_text(ex) for ex in train.examples]
    train_index = {}
    for index, text in enumerate(train_inputs):
        train_index.setdefault(normalize_text(text), index)
    train_signatures = minhash_signatures(train_inputs)
    shown = audit.options.max_examples
    for file in evaluation:
        inputs = [input_text(ex) for ex in file.examples]
        exact = [(i, train_index[normalize_text(t)]) for i, t in enumerate(inputs) if normalize_text(t) in train_index]
        exact_rows = {i for i, _ in exact}
        near = [
            pair for pair in near_matches_between(inputs, train_inputs, audit.options.near_threshold,
                                                  corpus_signatures=train_signatures)
            if pair.first not in exact_rows
        ]
        near_rows = sorted({pair.first for pair in near})
        audit.report["leakage"][file.path] = {
            "rows": len(inputs),
            "exact": {
                "rows": len(exact_rows),
                "examples": [{"eval": _located(file, i, inputs), "train": _located(train, j, train_inputs)}
                             for i, j in exact[:shown]],
            },
            "near": {
                "threshold": audit.options.near_threshold,
                "rows": len(near_rows),
                "examples": [
                    {"similarity": p.similarity, "eval": _located(file, p.first, inputs),
                     "train": _located(train, p.second, train_inputs)}
                    for p in sorted(near, key=lambda p: -p.similarity)[:shown]
                ],
            },
        }
        if exact_rows:
            audit.finding("error", "leakage", f"{file.path}: {len(exact_rows)} row(s) have an input identical to a "
                          "training row (after normalization): scores on them measure memory, not skill")
        if near_rows:
            audit.finding("warning", "leakage", f"{file.path}: {len(near_rows)} more row(s) nearly copy a training "
                          f"row (Jaccard >= {audit.options.near_threshold})")


def _pii(audit: _Audit, loaded: list[LoadedFile]) -> None:
    from tuneloop.data.privacy import find_pii, redacted_example

    by_kind: Counter = Counter()
    examples: list[dict] = []
    rows_with_pii = 0
    for file in loaded:
        for index, example in enumerate(file.examples):
            text = example_text(example)
            findings = find_pii(text)
            if not findings:
                continue
            rows_with_pii += 1
            by_kind.update(f.kind for f in findings)
            if len(examples) < audit.options.max_examples * 2:
                examples.append({"where": file.locations[index], "kind": findings[0].kind,
                                 "context": redacted_example(findings[0], text)})
    audit.report["pii"] = {"rows_with_pii": rows_with_pii, "by_kind": dict(by_kind), "examples": examples}
    if rows_with_pii:
        kinds = ", ".join(f"{kind} ({count})" for kind, count in by_kind.most_common())
        audit.finding("warning", "pii", f"{rows_with_pii} row(s) contain personal data: {kinds}; "
                      "`tuneloop data clean --redact-pii` replaces it with placeholders")


def _lengths(audit: _Audit, train: LoadedFile) -> None:
    tokenizer = audit.options.tokenizer
    if tokenizer is not None:
        lengths = [_token_length(tokenizer, ex) for ex in train.examples]
        unit = f"tokens ({audit.options.tokenizer_name})"
    else:
        lengths = [len(example_text(ex)) for ex in train.examples]
        unit = "characters (pass --model for tokens)"
    ordered = sorted(lengths)
    report = {
        "unit": unit,
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))],
        "max": ordered[-1],
        "histogram": _histogram(lengths),
    }
    limit = audit.options.max_length
    if tokenizer is not None and limit:
        over = [i for i, n in enumerate(lengths) if n > limit]
        report.update(max_length=limit, truncated_rows=len(over),
                      truncated_examples=[train.locations[i] for i in over[: audit.options.max_examples]])
        if over:
            audit.finding("warning", "lengths", f"{len(over)} training row(s) exceed max_length={limit} tokens and "
                          "would be truncated")
    audit.report["lengths"] = report


def _token_length(tokenizer, example: dict) -> int:
    if "messages" in example and getattr(tokenizer, "chat_template", None):
        return len(tokenizer.apply_chat_template(example["messages"], tokenize=True, return_dict=False))
    return len(tokenizer(example_text(example))["input_ids"])


def _labels(audit: _Audit, loaded: list[LoadedFile]) -> None:
    per_file = {file.path: Counter(label for ex in file.examples for label in labels_of(ex)) for file in loaded}
    if not any(label for counts in per_file.values() for label in counts if label is not None):
        return
    train_counts = per_file[loaded[0].path]
    if not train_counts:  # token classification where no training row tags an entity
        audit.finding("error", "labels", f"{loaded[0].path}: the training rows tag no entity; nothing to learn")
        return
    imbalance = max(train_counts.values()) / min(train_counts.values())
    audit.report["labels"] = {
        "classes": len(train_counts),
        "imbalance_ratio": round(imbalance, 2),
        "distribution": dict(train_counts.most_common()),
        "per_split": {path: dict(sorted(counts.items())) for path, counts in per_file.items()},
    }
    if imbalance >= 10:
        rare = min(train_counts, key=train_counts.get)
        audit.finding("warning", "labels", f"labels are imbalanced {imbalance:.0f}:1 (rarest: {rare!r}, "
                      f"{train_counts[rare]} rows); consider class weights")
    for file in loaded[1:]:
        unseen = sorted(set(per_file[file.path]) - set(train_counts))
        if unseen:
            audit.finding("error", "labels", f"{file.path}: label(s) never seen in training: {unseen[:10]}")


def _language(audit: _Audit, train: LoadedFile) -> None:
    from tuneloop.data.language import language_screen

    expected = audit.options.expected_language
    # The language of a row shows in its first few hundred characters; an even sample keeps big files quick.
    step = max(1, len(train.examples) // LANGUAGE_SAMPLE)
    sampled = list(range(0, len(train.examples), step))
    texts = [example_text(train.examples[i])[:LANGUAGE_CHARS] for i in sampled]
    # Flag only confident calls: short English questions often read as French at low confidence.
    codes, flagged = language_screen(texts, expected, min_confidence=LANGUAGE_CONFIDENCE)
    counts = Counter(code or "undetermined" for code in codes)
    unexpected = [sampled[i] for i, _ in flagged]
    code_of = {sampled[i]: code for i, code in flagged}
    audit.report["language"] = {
        "expected": expected,
        "distribution": dict(counts.most_common()),
        "min_confidence": LANGUAGE_CONFIDENCE,
        "rows_checked": len(sampled),
        "unexpected_rows": len(unexpected),
        "unexpected_examples": [
            {"where": train.locations[i], "language": code_of[i], "text": example_text(train.examples[i])[:160]}
            for i in unexpected[: audit.options.max_examples]
        ],
    }
    if unexpected:
        audit.finding("warning", "language", f"{len(unexpected)} row(s) are not in the expected language "
                      f"'{expected}' (e.g. {train.locations[unexpected[0]]}: {code_of[unexpected[0]]})"
                      + (f"; {len(sampled):,} of {len(train.examples):,} rows checked" if step > 1 else ""))


def _bias(audit: _Audit, train: LoadedFile) -> None:
    from tuneloop.data.bias import bias_screen

    labels = [label_of(ex) for ex in train.examples]
    groups = labels if any(label is not None for label in labels) else None
    screen = bias_screen([example_text(ex) for ex in train.examples], groups)
    audit.report["bias"] = screen
    for flag in screen.get("flags", []):
        audit.finding("info", "bias", flag["message"] if isinstance(flag, dict) else str(flag))


def _preference(audit: _Audit, train: LoadedFile) -> None:
    pairs = [(i, ex) for i, ex in enumerate(train.examples) if "chosen" in ex]
    if not pairs:
        return
    chosen = [ex["chosen"] for _, ex in pairs]
    rejected = [ex["rejected"] for _, ex in pairs]
    identical = [k for k in range(len(pairs)) if normalize_text(chosen[k]) == normalize_text(rejected[k])]
    similarity = (minhash_signatures(chosen) == minhash_signatures(rejected)).mean(axis=1)
    near = [k for k in range(len(pairs)) if similarity[k] >= 0.9 and k not in set(identical)]
    audit.report["preference"] = {
        "pairs": len(pairs),
        "identical_pairs": len(identical),
        "near_identical_pairs": len(near),
        "near_threshold": 0.9,
        "examples": [
            {"where": train.locations[pairs[k][0]], "similarity": round(float(similarity[k]), 3),
             "chosen": chosen[k][-160:], "rejected": rejected[k][-160:]}
            for k in (identical + near)[: audit.options.max_examples]
        ],
    }
    if identical:
        audit.finding("error", "preference", f"{len(identical)} pair(s) have identical chosen and rejected replies: "
                      "they teach nothing and add noise")
    if near:
        audit.finding("warning", "preference", f"{len(near)} pair(s) have nearly identical chosen and rejected replies")


def _located(file: LoadedFile, index: int, texts: list[str]) -> dict:
    return {"where": file.locations[index], "text": texts[index][:200]}


def _histogram(values: list[int], bins: int = 20) -> dict:
    low, high = min(values), max(values)
    width = max(1, -(-(high - low + 1) // bins))
    counts = Counter((value - low) // width for value in values)
    return {"start": low, "width": width, "counts": [counts.get(b, 0) for b in range((high - low) // width + 1)]}
