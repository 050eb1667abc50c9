"""Feedback becomes training data: stored ratings, corrections and pairwise picks -> sft, preference and kto files.

Input is a list of `Feedback` records (a served request joined with one piece of feedback on it) and
`PairwisePick` records, as the serve store holds them; `tuneloop.feedback.store_reader` reads them from a
store URL. Output, in one directory:
    sft.jsonl         chat rows: the prompt with the user's correction as the reply
    thumbs_up.jsonl   chat rows: replies users rated up on prompts with no correction (SFT-able, kept apart)
    preference.jsonl  {prompt: [messages], chosen, rejected}: correction over the model's reply; pairwise picks
    kto.jsonl         {messages: [prompt messages], completion, label}: rated replies, and corrections as desirable
    summary.json      counts of everything kept, dropped and resolved, and why

Rules (docs/feedback-loop.md states them for users):
- A rating counts as positive for "up" or 4-5, negative for "down" or 1-2; 3 is neutral and ignored (counted).
- Feedback is grouped by prompt (the conversation before the reply, normalized: case and spacing ignored).
- Corrections beat ratings. When users correct the same prompt differently, the correction given by the most
  distinct users wins, ties going to the most recent; the others are counted as overruled.
- A reply rated both up and down counts each user once: the majority wins, and an even split is a conflict,
  dropped and counted. The same holds for two pairwise picks in opposite directions.
- A prompt that copies a row of the frozen test set (equal after normalization, or a near copy: 5-gram Jaccard
  at or above `leak_threshold`) is dropped and counted, with every piece of feedback on it: training on it
  would make the evaluation on that test set a lie.
- An empty reply (the model stopped at once) is left out of preference and kto rows and counted: trainers refuse
  an empty completion, and there is nothing in it to prefer; a correction of it still becomes an sft row.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tuneloop.data.dedup import near_matches_between, normalize_text
from tuneloop.workspace import write_json, write_jsonl

POSITIVE_RATINGS = {"up", "4", "5"}
NEGATIVE_RATINGS = {"down", "1", "2"}
NEUTRAL_RATINGS = {"3"}
DEFAULT_LEAK_THRESHOLD = 0.8
_EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


@dataclass(frozen=True)
class Feedback:
    """One piece of feedback on one served reply, with the request it answers."""

    request_id: str
    messages: tuple[dict, ...]  # the conversation the model answered (system / user / assistant turns)
    reply: str
    model: str
    user: str | None = None
    rating: str | None = None  # up | down | 1..5 (as text)
    correction: str | None = None
    comment: str | None = None
    created_at: datetime | None = None
    version: str | None = None  # which weights answered (run directory or promotion version)


@dataclass(frozen=True)
class PairwisePick:
    """A user's choice between two replies to the same conversation."""

    messages: tuple[dict, ...]
    preferred: str
    other: str
    user: str | None = None
    created_at: datetime | None = None


@dataclass
class ExportSummary:
    feedback_rows: int = 0
    pairwise_rows: int = 0
    neutral_ratings: int = 0
    prompts: int = 0
    leaked_prompts: int = 0
    leaked_feedback: int = 0
    leaked_examples: list[str] = field(default_factory=list)
    overruled_corrections: int = 0
    conflicting_ratings: int = 0
    conflicting_pairs: int = 0
    empty_replies: int = 0  # rated or picked replies with no text (the model stopped at once): dropped
    sft_rows: int = 0
    thumbs_up_rows: int = 0
    preference_rows: int = 0
    kto_rows: int = 0

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def rating_sign(rating: str | int | None) -> int:
    """+1 for a positive rating, -1 for a negative one, 0 for neutral or none."""
    value = str(rating).strip().lower() if rating is not None else ""
    if value in POSITIVE_RATINGS:
        return 1
    if value in NEGATIVE_RATINGS:
        return -1
    return 0


def prompt_key(messages: tuple[dict, ...] | list[dict]) -> str:
    """The grouping key of a conversation: role and normalized content of every turn."""
    return "\n".join(f"{m['role']}: {normalize_text(str(m['content']))}" for m in messages)


def user_text(messages: tuple[dict, ...] | list[dict]) -> str:
    """The users' words in a conversation (what leakage is checked on)."""
    return "\n".join(str(m["content"]) for m in messages if m["role"] == "user")


def export_feedback(
    feedback: list[Feedback], pairs: list[PairwisePick], out_dir: Path, test_rows: list[dict] | None = None,
    leak_threshold: float = DEFAULT_LEAK_THRESHOLD,
) -> dict:
    """Write the training files from feedback; returns the summary also written to summary.json."""
    summary = ExportSummary(feedback_rows=len(feedback), pairwise_rows=len(pairs))
    leaked = _leaked_prompts([f.messages for f in feedback] + [p.messages for p in pairs], test_rows or [],
                             leak_threshold)
    summary.leaked_prompts = len(leaked)
    summary.leaked_examples = sorted(user_text(m) for m in leaked.values())[:10]

    by_prompt: dict[str, list[Feedback]] = defaultdict(list)
    for item in feedback:
        if prompt_key(item.messages) in leaked:
            summary.leaked_feedback += 1
            continue
        if item.rating is not None and rating_sign(item.rating) == 0 and not item.correction:
            summary.neutral_ratings += 1
        by_prompt[prompt_key(item.messages)].append(item)
    summary.prompts = len(by_prompt)

    sft, thumbs_up, preference, kto = [], [], [], []
    for items in by_prompt.values():
        messages = list(items[0].messages)
        correction = _winning_correction(items, summary)
        replies = _net_rating_per_reply(items, summary)
        if correction is not None:
            sft.append({"messages": messages + [{"role": "assistant", "content": correction}]})
            kto.append({"messages": messages, "completion": correction, "label": True})
            rejected = {item.reply for item in items if (item.correction or rating_sign(item.rating) < 0)}
            rejected |= {reply for reply, sign in replies.items() if sign < 0}
            for reply in sorted(rejected - {correction}):
                if not reply.strip():
                    summary.empty_replies += 1
                    continue
                preference.append({"prompt": messages, "chosen": correction, "rejected": reply})
        for reply, sign in replies.items():
            if reply == correction:
                continue
            if not reply.strip():
                summary.empty_replies += 1
                continue
            kto.append({"messages": messages, "completion": reply, "label": sign > 0})
            if sign > 0 and correction is None:
                thumbs_up.append({"messages": messages + [{"role": "assistant", "content": reply}]})
    preference.extend(_pairwise_rows([p for p in pairs if prompt_key(p.messages) not in leaked], summary))
    summary.leaked_feedback += sum(1 for p in pairs if prompt_key(p.messages) in leaked)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in (("sft", sft), ("thumbs_up", thumbs_up), ("preference", preference), ("kto", kto)):
        write_jsonl(out_dir / f"{name}.jsonl", rows)
        setattr(summary, f"{name}_rows", len(rows))
    result = summary.as_dict()
    write_json(out_dir / "summary.json", result)
    return result


def _leaked_prompts(conversations: list[tuple[dict, ...]], test_rows: list[dict], threshold: float) -> dict:
    """prompt key -> conversation, for each conversation whose user text copies a test row's user text."""
    test_texts = [user_text(row["messages"]) for row in test_rows if row.get("messages")]
    if not test_texts or not conversations:
        return {}
    distinct = {prompt_key(m): m for m in conversations}
    keys = list(distinct)
    texts = [user_text(distinct[key]) for key in keys]
    exact = {normalize_text(text) for text in test_texts}
    leaked = {key: distinct[key] for key, text in zip(keys, texts, strict=True) if normalize_text(text) in exact}
    for pair in near_matches_between(texts, test_texts, threshold):
        leaked[keys[pair.first]] = distinct[keys[pair.first]]
    return leaked


def _winning_correction(items: list[Feedback], summary: ExportSummary) -> str | None:
    corrections = [item for item in items if item.correction and item.correction.strip()]
    if not corrections:
        return None
    users: dict[str, set] = defaultdict(set)
    latest: dict[str, datetime] = {}
    for item in corrections:
        text = item.correction.strip()
        users[text].add(item.user or item.request_id)  # an anonymous correction counts as its own user
        latest[text] = max(latest.get(text, _EARLIEST), _stamp(item.created_at))
    ranked = sorted(users, key=lambda text: (len(users[text]), latest[text]), reverse=True)
    summary.overruled_corrections += len(ranked) - 1
    return ranked[0]


def _net_rating_per_reply(items: list[Feedback], summary: ExportSummary) -> dict[str, int]:
    """reply -> +1 or -1 by the majority of distinct users rating it; even splits dropped and counted."""
    votes: dict[str, dict[str, int]] = defaultdict(dict)
    for item in sorted(items, key=lambda i: _stamp(i.created_at)):
        sign = rating_sign(item.rating)
        if sign:
            votes[item.reply][item.user or item.request_id] = sign  # a user's latest rating of a reply counts
    net = {}
    for reply, by_user in votes.items():
        total = sum(by_user.values())
        if total == 0:
            summary.conflicting_ratings += 1
        else:
            net[reply] = 1 if total > 0 else -1
    return net


def _pairwise_rows(pairs: list[PairwisePick], summary: ExportSummary) -> list[dict]:
    tally: dict[tuple[str, frozenset], Counter] = defaultdict(Counter)
    conversation = {}
    for pick in pairs:
        key = (prompt_key(pick.messages), frozenset((pick.preferred, pick.other)))
        tally[key][pick.preferred] += 1
        conversation[key] = list(pick.messages)
    rows = []
    for key, counts in tally.items():
        ranked = counts.most_common()
        if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
            summary.conflicting_pairs += 1
            continue
        chosen = ranked[0][0]
        rejected = next(iter(key[1] - {chosen}), None)
        if rejected is None:
            continue  # both replies were the same text: nothing to learn
        if not chosen.strip() or not rejected.strip():
            summary.empty_replies += 1  # a trainer refuses an empty reply, and it teaches no preference
            continue
        rows.append({"prompt": conversation[key], "chosen": chosen, "rejected": rejected})
    return rows


def _stamp(moment: datetime | None) -> datetime:
    """A comparable UTC time: stores give aware times, tests and files may give naive ones (taken as UTC)."""
    if moment is None:
        return _EARLIEST
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
