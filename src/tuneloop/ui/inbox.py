"""The feedback inbox over the serve store: thumbs-down replies and corrections, and a reviewer's decisions.

Accept marks a row `accepted` (an edit also keeps the user's words in original_correction); discard marks it
`discarded`. `tuneloop feedback export --reviewed` (what the inbox's retrain button runs) takes only accepted
rows; a plain export takes everything except discarded rows, as before the inbox existed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from tuneloop.errors import TuneloopError
from tuneloop.serve.store import FeedbackRow, RequestRow, Store, utcnow

REVIEWS = ("accepted", "discarded")


@dataclass
class InboxItem:
    id: int
    created_at: datetime
    rating: str | None
    correction: str | None
    original_correction: str | None
    review: str | None
    prompt: str
    reply: str
    model: str
    run_dir: str | None


def _aware(moment: datetime | None) -> datetime | None:
    return moment.replace(tzinfo=timezone.utc) if moment is not None and moment.tzinfo is None else moment


def _needs_review():
    return or_(FeedbackRow.rating == "down", FeedbackRow.correction.is_not(None))


def inbox_items(store: Store, limit: int = 200) -> list[InboxItem]:
    """Thumbs-down ratings and corrections, not-yet-reviewed first, newest first within each group."""
    with Session(store.engine) as session:
        rows = session.execute(
            select(FeedbackRow, RequestRow).join(RequestRow, FeedbackRow.request_id == RequestRow.id)
            .where(FeedbackRow.kind == "rating", _needs_review())
            .order_by(FeedbackRow.review.is_not(None), FeedbackRow.created_at.desc()).limit(limit)).all()
    items = []
    for feedback, request in rows:
        users = [m["content"] for m in request.messages or [] if m.get("role") == "user"]
        items.append(InboxItem(feedback.id, _aware(feedback.created_at), feedback.rating, feedback.correction,
                               feedback.original_correction, feedback.review, users[-1] if users else
                               (request.prompt or ""), request.reply or "", request.variant or request.model or "",
                               request.run_dir))
    return items


def review(store: Store, feedback_id: int, decision: str, correction: str | None = None) -> None:
    """Record a reviewer's decision; an edited correction replaces the user's (kept as original_correction)."""
    if decision not in REVIEWS:
        raise TuneloopError(f"review: {decision!r} is not a decision; use accept, edit or discard.")
    with Session(store.engine) as session, session.begin():
        row = session.get(FeedbackRow, feedback_id)
        if row is None:
            raise TuneloopError(f"feedback {feedback_id}: no such item in the store (it may have been deleted).")
        if correction is not None:
            correction = correction.strip()
            if decision == "accepted" and not correction:
                raise TuneloopError("The correction is empty: write the reply the model should have given, or "
                                    "discard the item.")
            if correction != (row.correction or ""):
                if row.original_correction is None:
                    row.original_correction = row.correction or ""
                row.correction = correction
        elif decision == "accepted" and not row.correction:
            raise TuneloopError("This thumbs-down has no correction yet: write the reply the model should have "
                                "given in the box, then accept it.")
        row.review = decision
        row.reviewed_at = utcnow()


def counts_since(store: Store, since: datetime | None) -> dict:
    """How much feedback arrived since the last retrain (or ever, when there was none)."""
    with Session(store.engine) as session:
        query = select(FeedbackRow).where(FeedbackRow.kind == "rating")
        if since is not None:
            query = query.where(FeedbackRow.created_at >= since)
        rows = list(session.scalars(query))
    return {"feedback": len(rows),
            "thumbs_up": sum(1 for r in rows if r.rating == "up"),
            "thumbs_down": sum(1 for r in rows if r.rating == "down"),
            "corrections": sum(1 for r in rows if r.correction),
            "to_review": sum(1 for r in rows if r.review is None and (r.rating == "down" or r.correction)),
            "accepted": sum(1 for r in rows if r.review == "accepted"),
            "discarded": sum(1 for r in rows if r.review == "discarded")}


def last_retrain(workspace: Path) -> tuple[datetime | None, Path | None]:
    """When the newest retrained run in the workspace was gated (its promotion.json), and which run it is."""
    found = [(p.stat().st_mtime, p.parent) for p in workspace.glob("*/promotion.json")]
    if not found:
        return None, None
    stamp, run = max(found)
    return datetime.fromtimestamp(stamp, timezone.utc), run


def stored_reply(store: Store, request_id: str) -> dict | None:
    """A reply the chat page showed, read back from the store (so a reload shows the same replies)."""
    if not request_id:
        return None
    with Session(store.engine) as session:
        request = session.get(RequestRow, request_id)
        if request is None:
            return None
        given = list(session.scalars(select(FeedbackRow).where(FeedbackRow.request_id == request_id)))
    users = [m["content"] for m in request.messages or [] if m.get("role") == "user"]
    variant = request.variant or ""
    label = (f"{request.model} — baseline ({Path(request.base_model or '').name})" if variant.endswith(":baseline")
             else f"{request.model} — tuned")
    return {"request_id": request.id, "label": label, "reply": request.reply or "",
            "prompt": users[-1] if users else "",
            "seconds": request.latency_s, "feedback": [{"rating": f.rating, "correction": f.correction} for f in given]}
