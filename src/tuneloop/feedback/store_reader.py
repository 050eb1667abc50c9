"""Read the serve store's requests and feedback as export records (tuneloop.feedback.export's Feedback, PairwisePick).

Only chat requests that got a reply (status 200) count. `model` keeps the requests a given model id answered
or was asked for (an A/B alias or one of its variants); `since` keeps feedback given at or after a time, `until`
feedback given before one.
Feedback a reviewer discarded in the UI's inbox never counts; `reviewed_only` keeps only what a reviewer accepted.
"""

from __future__ import annotations

from datetime import datetime

from tuneloop.feedback.export import Feedback, PairwisePick


def read_feedback(url: str, since: datetime | None = None, model: str | None = None, reviewed_only: bool = False,
                  until: datetime | None = None) -> tuple[list[Feedback], list[PairwisePick]]:
    """Feedback and pairwise picks from the store at url, joined with the requests they rate."""
    from tuneloop.serve.store import read_tables

    requests, feedback = read_tables(url)
    by_id = {row["id"]: row for row in requests if _usable(row)}
    ratings, pairs = [], []
    for row in feedback:
        if (since is not None and row["created_at"] < since) or (until is not None and row["created_at"] >= until):
            continue
        if row.get("review") == "discarded" or (reviewed_only and row.get("review") != "accepted"):
            continue
        rated = by_id.get(row["request_id"])
        if rated is None or not _answered_by(rated, model):
            continue
        if row["kind"] == "pairwise":
            other = by_id.get(row.get("other_request_id"))
            preferred = row.get("preferred_request_id")
            if other is None or preferred not in (rated["id"], other["id"]):
                continue  # a tie or a pick between unusable requests teaches nothing
            winner, loser = (rated, other) if preferred == rated["id"] else (other, rated)
            pairs.append(PairwisePick(tuple(rated["messages"]), winner["reply"], loser["reply"],
                                      user=row.get("user_hash"), created_at=row["created_at"]))
            continue
        ratings.append(Feedback(
            request_id=rated["id"], messages=tuple(rated["messages"]), reply=rated["reply"],
            model=rated.get("variant") or rated.get("model") or "", user=row.get("user_hash"),
            rating=row.get("rating"), correction=row.get("correction"), comment=row.get("comment"),
            created_at=row["created_at"], version=rated.get("adapter_version"),
        ))
    return ratings, pairs


def _usable(request: dict) -> bool:
    return request.get("status") == 200 and bool(request.get("messages")) and request.get("reply") is not None


def _answered_by(request: dict, model: str | None) -> bool:
    return model is None or model in (request.get("model"), request.get("variant"))
