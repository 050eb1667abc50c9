"""Self-distillation (train.guard.self_distill): the base model rewrites each training reply in its own words.

Each row's final reply is shown to the base model as a reference ("a correct answer is: ...") with the
question, and the base writes its own answer (greedy). The rewrite replaces the reference only when it
keeps the reference's content: it contains the row's `answer` field (case-insensitive), or, for rows
without one, its word-level F1 with the reference is at least `threshold`. Otherwise the original reply
stays. Training on replies in the model's own distribution moves it less (Yang et al. 2024, SDFT).
The counts (kept, fallen back, by which rule) are recorded in guard.json and the report.
"""

from __future__ import annotations

import copy

from tuneloop.data.text_match import token_f1

REWRITE_REQUEST = (
    "{question}\n\nA correct answer is: \"{reference}\"\n"
    "Answer the question above in your own words. Keep every fact of the correct answer."
)


def rewrite_conversation(messages: list[dict]) -> list[dict]:
    """The conversation the base model answers: the last user turn carries the reference reply."""
    *before, reply = messages
    users = [i for i, m in enumerate(before) if m["role"] == "user"]
    asked = [dict(m) for m in before]
    if users:
        last = users[-1]
        asked[last]["content"] = REWRITE_REQUEST.format(question=asked[last]["content"], reference=reply["content"])
    return asked + [{"role": "assistant", "content": ""}]


def keep_rewrite(rewrite: str, reference: str, answer: str | None, threshold: float) -> tuple[bool, str]:
    """Whether a rewrite may replace the reference, and the rule that decided ('answer' or 'similarity')."""
    if not rewrite.strip():
        return False, "answer" if answer else "similarity"
    if answer:
        return answer.strip().lower() in rewrite.lower(), "answer"
    return token_f1([rewrite], [reference])[0] / 100.0 >= threshold, "similarity"


def apply_rewrites(rows: list[dict], rewrites: list[str | None], threshold: float) -> tuple[list[dict], dict]:
    """Rows with each accepted rewrite as the final reply (None: the row was not rewritten), and the counts."""
    out, counts = [], {"rows": len(rows), "rewritten": 0, "kept_original": 0, "not_chat": 0,
                       "by_answer": 0, "by_similarity": 0, "threshold": threshold}
    for row, rewrite in zip(rows, rewrites, strict=True):
        if rewrite is None:
            counts["not_chat"] += 1
            out.append(row)
            continue
        reference = row["messages"][-1]["content"]
        keep, rule = keep_rewrite(rewrite, reference, row.get("answer"), threshold)
        if keep:
            row = copy.deepcopy(row)
            row["messages"][-1]["content"] = rewrite
            counts["rewritten"] += 1
            counts[f"by_{rule}"] += 1
        else:
            counts["kept_original"] += 1
        out.append(row)
    return out, counts


def self_distill_rows(rows: list[dict], settings, base_path: str, tokenizer, device: str, dtype,
                      console_print=print) -> tuple[list[dict], dict]:
    """Training rows with the base model's checked rewrites of their replies, and the counts."""
    from tuneloop.train.guard.replay import base_replies

    chat = [i for i, row in enumerate(rows)
            if row.get("messages") and row["messages"][-1]["role"] == "assistant" and not row.get("tools")]
    conversations = [rewrite_conversation(rows[i]["messages"]) for i in chat]
    generated = base_replies(base_path, tokenizer, [], settings.max_new_tokens, device, dtype, settings.batch_size,
                             desc="self_distill: rewrites", conversations=conversations) if chat else []
    rewrites: list[str | None] = [None] * len(rows)
    for i, text in zip(chat, generated, strict=True):
        rewrites[i] = text
    out, counts = apply_rewrites(rows, rewrites, settings.threshold)
    console_print(f"self_distill: {counts['rewritten']} of {len(rows)} replies rewritten by the base model "
                  f"({counts['kept_original']} kept their original: the rewrite lost the answer)")
    return out, counts
