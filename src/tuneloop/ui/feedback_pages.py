"""Routes of the Chat page (tuned beside baseline, thumbs, corrections) and the Feedback inbox (review, retrain)."""

from __future__ import annotations

from urllib.parse import urlencode

from fastapi import FastAPI, Form, Request
from fastapi.responses import RedirectResponse

from tuneloop.errors import TuneloopError
from tuneloop.ui import inbox, jobs, new_run, runs


def add_routes(app: FastAPI, state, page) -> None:
    def chat_runs() -> list[str]:
        return [p.name for p in runs.find_runs(state.workspace) if (p / "adapter").is_dir() or (p / "model").is_dir()]

    @app.get("/chat")
    def chat_page(request: Request, run: str = "", against: str = "", left: str = "", right: str = "",
                  noted: str = ""):
        replies = [r for r in (inbox.stored_reply(state.store, left), inbox.stored_reply(state.store, right)) if r]
        return page(request, "chat.html", runs=chat_runs(), run=run, against=against, replies=replies,
                    prompt=replies[0]["prompt"] if replies else "", noted=noted, left=left, right=right)

    @app.post("/chat")
    async def chat_send(run: str = Form(""), against: str = Form(""), prompt: str = Form(""),
                        system: str = Form("")):
        if not prompt.strip():
            raise TuneloopError("Write a message first: the prompt box is empty.")
        path = runs.run_path(state.workspace, run)
        messages = ([{"role": "system", "content": system.strip()}] if system.strip() else []) + [
            {"role": "user", "content": prompt.strip()}]
        import asyncio

        first = await asyncio.to_thread(state.chat.answer, path, messages, False)
        if against:
            second = await asyncio.to_thread(state.chat.answer, runs.run_path(state.workspace, against), messages,
                                             False)
        else:
            second = await asyncio.to_thread(state.chat.answer, path, messages, True)
        query = urlencode({"run": run, "against": against, "left": first.request_id, "right": second.request_id})
        return RedirectResponse(f"/chat?{query}", status_code=303)

    @app.post("/chat/feedback")
    def chat_feedback(request_id: str = Form(...), rating: str = Form(""), correction: str = Form(""),
                      back: str = Form("/chat")):
        if rating not in ("up", "down", ""):
            raise TuneloopError(f"rating: {rating!r}; send up or down.")
        if not rating and not correction.strip():
            raise TuneloopError("Nothing to record: press thumbs up or down, or write a correction.")
        from tuneloop.serve.store import UnknownRequest

        try:
            state.store.record_feedback("rating", request_id, rating=rating or ("down" if correction.strip()
                                                                                  else None),
                                        score={"up": 1.0, "down": 0.0}.get(rating or "down"),
                                        correction=correction.strip() or None)
        except UnknownRequest:
            raise TuneloopError(f"request_id: {request_id!r} is not in the store; ask again, then rate the "
                                "reply.") from None
        target = back if back.startswith("/chat") else "/chat"
        return RedirectResponse(f"{target}&noted={request_id}" if "?" in target else target, status_code=303)

    # ---- feedback inbox ---------------------------------------------------------------------------------------
    @app.get("/inbox")
    def inbox_page(request: Request):
        since, last_run = inbox.last_retrain(state.workspace)
        retrains = [job for job in jobs.list_jobs(state.workspace) if job.kind == "retrain"][:5]
        served = [p.name for p in runs.find_runs(state.workspace) if (p / "adapter").is_dir() or
                  (p / "model").is_dir()]
        items = inbox.inbox_items(state.store)
        about = next((i.model.removesuffix(":baseline") for i in items if i.review != "discarded"), None)
        served.sort(key=lambda name: name != about)  # the run the feedback is about comes first
        return page(request, "inbox.html", items=items, counts=inbox.counts_since(
            state.store, since), since=since, last_run=last_run, retrains=retrains, served=served,
            store=state.store.engine.url.render_as_string(hide_password=True))

    @app.post("/inbox/item/{feedback_id}")
    def inbox_review(feedback_id: int, action: str = Form(...), correction: str | None = Form(None)):
        decision = {"accept": "accepted", "edit": "accepted", "discard": "discarded"}.get(action)
        if decision is None:
            raise TuneloopError(f"action: {action!r}; use accept, edit or discard.")
        inbox.review(state.store, feedback_id, decision, correction if action != "discard" else None)
        return RedirectResponse("/inbox", status_code=303)

    @app.post("/inbox/retrain")
    def inbox_retrain(run: str = Form("")):
        path = runs.run_path(state.workspace, run)
        counts = inbox.counts_since(state.store, None)
        if not counts["accepted"]:
            raise TuneloopError("No accepted feedback yet: accept (or edit) at least one correction in the inbox, "
                                "then retrain.")
        out = state.workspace / new_run.free_name(state.workspace, f"{run}-retrained")
        export_dir = jobs.ui_dir(state.workspace) / "feedback-exports" / out.name
        store = state.store.url.removeprefix("sqlite:///") if state.store.url.startswith("sqlite:///") else \
            state.store.url
        job = jobs.start_job(state.workspace, "retrain", f"retrain {run} on reviewed feedback -> {out.name}", [
            jobs.tuneloop_command("feedback", "export", store, "--out", str(export_dir), "--run", str(path),
                                  "--reviewed"),
            jobs.tuneloop_command("retrain", str(path), "--feedback", str(export_dir), "--out", str(out))])
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)
