"""The UI's FastAPI app: routes for every page, the live JSON endpoint, and plain messages for user errors.

Pages are Jinja2 templates rendered here; the only script is static/live.js (polls the live endpoint). A
TuneloopError raised by any route (a bad upload, an invalid value, a missing run) becomes a page with its
message and one log line, never a traceback.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from tuneloop.errors import TuneloopError
from tuneloop.serve.store import Store
from tuneloop.ui import charts, inbox, jobs, new_run, runs, studies
from tuneloop.ui.auth import COOKIE, OPEN_PATHS, UiAuth
from tuneloop.ui.chat import ChatModels

HERE = Path(__file__).parent
log = logging.getLogger("tuneloop.ui")
VIEWABLE = {".html": "text/html", ".json": "application/json", ".jsonl": "text/plain", ".txt": "text/plain",
            ".md": "text/plain", ".yaml": "text/plain"}
EXPORT_FORMATS = ("hf", "gguf", "ollama", "vllm")


@dataclass
class UiState:
    workspace: Path
    examples: Path
    store: Store
    auth: UiAuth = field(default_factory=UiAuth)
    chat: ChatModels | None = None

    def __post_init__(self):
        self.chat = self.chat or ChatModels(self.store)


def seconds_text(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    return f"{seconds // 3600}h {seconds % 3600 // 60:02d}m" if seconds >= 3600 else (
        f"{seconds // 60}m {seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s")


def number(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def param_text(params: dict) -> str:
    """Trial parameters as key=value, floats to 4 significant digits."""
    return "  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def create_app(state: UiState) -> FastAPI:
    app = FastAPI(title="tuneloop ui", docs_url=None, redoc_url=None, openapi_url=None)
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.globals.update(seconds_text=seconds_text, number=number, param_text=param_text,
                                 auth_enabled=state.auth.enabled)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    def page(request: Request, template: str, status_code: int = 200, **context) -> HTMLResponse:
        return templates.TemplateResponse(request, template, {"workspace": state.workspace, **context},
                                          status_code=status_code)

    @app.middleware("http")
    async def require_sign_in(request: Request, call_next):
        path = request.url.path
        if state.auth.enabled and not path.startswith(OPEN_PATHS) and not state.auth.allowed(
                request.cookies.get(COOKIE), request.headers.get("authorization")):
            if path.startswith("/api/") or request.method != "GET":
                return JSONResponse({"error": "sign in first: a session cookie from /login or "
                                              "'Authorization: Bearer KEY'"}, status_code=401)
            return RedirectResponse(f"/login?{urlencode({'next': path})}", status_code=303)
        return await call_next(request)

    @app.exception_handler(TuneloopError)
    async def user_error(request: Request, exc: TuneloopError):
        log.info("user error on %s %s: %s", request.method, request.url.path, str(exc).splitlines()[0])
        if request.url.path.startswith("/api/"):
            return JSONResponse({"error": str(exc)}, status_code=400)
        return page(request, "error.html", 400, message=str(exc))

    @app.get("/health")
    def health():
        return {"status": "ok"}

    @app.get("/login")
    def login_page(request: Request, next: str = "/runs"):
        return page(request, "login.html", next=next if next.startswith("/") else "/runs", problem=None)

    @app.post("/login")
    def login(request: Request, password: str = Form(""), next: str = Form("/runs")):
        if not state.auth.password_ok(password):
            return page(request, "login.html", 401, next=next, problem="Wrong password.")
        response = RedirectResponse(next if next.startswith("/") else "/runs", status_code=303)
        response.set_cookie(COOKIE, state.auth.session_token(), httponly=True, samesite="strict")
        return response

    @app.get("/")
    def home():
        return RedirectResponse("/runs", status_code=303)

    # ---- runs, compare, run page ------------------------------------------------------------------------------
    @app.get("/runs")
    def runs_page(request: Request):
        rows = [runs.summarize(state.workspace, path) for path in runs.find_runs(state.workspace)]
        return page(request, "runs.html", rows=rows)

    @app.get("/compare")
    def compare_page(request: Request, run: list[str] | None = Query(None)):
        names = list(dict.fromkeys(run or []))
        if len(names) < 2:
            raise TuneloopError("Compare needs two or more runs: tick them in the runs table, then press Compare.")
        paths = [runs.run_path(state.workspace, name) for name in names]
        metrics = {p.name: (runs.read_json(p / "metrics.json") if (p / "metrics.json").is_file() else {})
                   for p in paths}
        keys = list(dict.fromkeys(k for m in metrics.values() for k in m.get("tuned", {})
                                  if k != "validation_tokens"))
        first = metrics[paths[0].name]
        table = [(key, first.get("baseline", {}).get(key), [m.get("tuned", {}).get(key) for m in metrics.values()])
                 for key in keys]
        chart_keys = [k for k in keys if k not in ("validation_loss", "perplexity")]
        chart = charts.bar_chart(chart_keys, {name: [m.get("tuned", {}).get(k) for k in chart_keys]
                                              for name, m in metrics.items()})
        curves = charts.line_chart({name: runs.read_curves(p)["validation"] or runs.read_curves(p)["train"]
                                    for name, p in zip(metrics, paths, strict=True)}, y_label="validation loss",
                                   width=1080)
        missing = [name for name, m in metrics.items() if not m]
        return page(request, "compare.html", names=list(metrics), table=table, chart=chart, curves=curves,
                    missing=missing, first=paths[0].name)

    def live_data(path: Path) -> dict:
        summary = runs.summarize(state.workspace, path)
        curves = runs.read_curves(path)
        job = summary.job
        progress = job.progress() if job is not None else None
        step, total, eta = progress if progress else (curves["step"], None, None)
        if job is None or not job.running:
            eta = None
        svg = charts.line_chart({"train loss": curves["train"], "validation loss": curves["validation"]},
                                width=1080, empty="waiting for the first logged step…")
        return {"status": summary.status, "running": summary.status == "running", "step": step, "total": total,
                "tokens_per_second": curves["tokens_per_second"], "eta_seconds": eta, "svg": svg,
                "train_points": len(curves["train"]), "validation_points": len(curves["validation"]),
                "failure": summary.failure, "evaluated": (path / "metrics.json").is_file()}

    @app.get("/api/runs/{name}/live")
    def live(name: str):
        return JSONResponse(live_data(runs.run_path(state.workspace, name)), headers={"Cache-Control": "no-store"})

    @app.get("/runs/{name}")
    def run_page(request: Request, name: str):
        path = runs.run_path(state.workspace, name)
        summary = runs.summarize(state.workspace, path)
        samples = runs.read_samples(path, 8)
        files = {label: rel for label, rel in (("report", "report.html"), ("review sheet", "review.html"),
                                                ("audit", "audit/audit.html"), ("config", "config.yaml"))
                 if (path / rel).is_file()}
        exports = [job for job in jobs.list_jobs(state.workspace) if job.kind == "export"
                   and job.run_dir == str(path.resolve())][:4]
        return page(request, "run.html", run=summary, live=live_data(path), files=files, samples=samples,
                    exports=exports, formats=EXPORT_FORMATS, trained=(path / "adapter").is_dir()
                    or (path / "model").is_dir(), log=summary.job.log_tail(3000) if summary.job else "")

    @app.get("/runs/{name}/files/{rel:path}")
    def run_file(name: str, rel: str):
        path = runs.run_path(state.workspace, name)
        target = (path / rel).resolve()
        if not target.is_relative_to(path.resolve()) or not target.is_file() or target.suffix not in VIEWABLE:
            raise TuneloopError(f"{name}/{rel}: no such report file in the run directory.")
        return FileResponse(target, media_type=VIEWABLE[target.suffix])

    @app.post("/runs/{name}/stop")
    def stop(name: str):
        path = runs.run_path(state.workspace, name)
        job = jobs.latest_job(state.workspace, path)
        if job is None:
            raise TuneloopError(f"{name} was not started from the UI, so it has no job to stop here; press "
                                "Ctrl-C where `tuneloop run` runs.")
        jobs.stop_job(job)
        return RedirectResponse(f"/runs/{name}", status_code=303)

    @app.post("/runs/{name}/resume")
    def resume(name: str):
        path = runs.run_path(state.workspace, name)
        if (path / "metrics.json").is_file():
            raise TuneloopError(f"{name} finished already; there is nothing to resume.")
        command = jobs.tuneloop_command("run", str(path / "config.yaml"), "--resume", "--set",
                                        f"output_dir={path.resolve()}")
        jobs.start_job(state.workspace, "resume", f"resume {name}", [command], path)
        return RedirectResponse(f"/runs/{name}", status_code=303)

    @app.post("/runs/{name}/export")
    def export(name: str, format: str = Form("hf")):
        path = runs.run_path(state.workspace, name)
        if format not in EXPORT_FORMATS:
            raise TuneloopError(f"format: {format!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
        out = jobs.ui_dir(state.workspace) / "exports" / f"{name}-{format}-{time.strftime('%Y%m%d-%H%M%S')}"
        job = jobs.start_job(state.workspace, "export", f"export {name} as {format}",
                             [jobs.tuneloop_command("export", str(path), "--out", str(out), "--format", format)], path)
        return RedirectResponse(f"/jobs/{job.id}", status_code=303)

    @app.get("/jobs/{job_id}")
    def job_page(request: Request, job_id: str):
        job = next((j for j in jobs.list_jobs(state.workspace) if j.id == job_id), None)
        if job is None:
            raise TuneloopError(f"job {job_id!r}: no such job in {jobs.ui_dir(state.workspace) / 'jobs'}.")
        return page(request, "job.html", job=job)

    # ---- new run ----------------------------------------------------------------------------------------------
    @app.get("/new")
    def new_page(request: Request):
        return page(request, "new.html", examples=new_run.example_configs(state.examples), examples_dir=state.examples)

    @app.post("/new/example")
    def new_from_example(example: str = Form("")):
        draft = new_run.draft_from_example(state.workspace, state.examples, example)
        return RedirectResponse(f"/new/{draft}", status_code=303)

    @app.post("/new/upload")
    async def new_from_upload(data: UploadFile | None = File(None)):
        content = await data.read() if data is not None else b""
        draft = new_run.draft_from_upload(state.workspace, data.filename if data is not None else "", content)
        return RedirectResponse(f"/new/{draft}", status_code=303)

    def draft_page(request: Request, draft: str, raw: dict, name: str, problems: dict, status_code: int = 200):
        _, audit = new_run.read_draft(state.workspace, draft)
        values = {f.key: "" if new_run.get_key(raw, f.key) is None else str(new_run.get_key(raw, f.key))
                  for f in new_run.FIELDS}
        return page(request, "draft.html", status_code, draft=draft, audit=new_run.audit_lines(audit),
                    files=(audit or {}).get("files", []), fields=new_run.FIELDS, values=values, name=name,
                    problems=problems, other=[p for k, p in problems.items()
                                              if k != "name" and k not in values])

    @app.get("/new/{draft}")
    def draft_form(request: Request, draft: str):
        raw, _ = new_run.read_draft(state.workspace, draft)
        return draft_page(request, draft, raw, Path(str(raw.get("output_dir", "run"))).name, {})

    @app.post("/new/{draft}")
    async def draft_start(request: Request, draft: str):
        raw, _ = new_run.read_draft(state.workspace, draft)
        form = {key: str(value) for key, value in (await request.form()).items()}
        raw, name = new_run.apply_form(raw, form)
        problems = new_run.validate_form(state.workspace, raw, name)
        if problems:
            log.info("new run %s: %d invalid value(s): %s", draft, len(problems), "; ".join(problems.values()))
            return draft_page(request, draft, raw, name, problems, 400)
        new_run.start_draft(state.workspace, draft, raw, name)
        return RedirectResponse(f"/runs/{name}", status_code=303)

    # ---- chat -------------------------------------------------------------------------------------------------
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

    @app.post("/inbox/{feedback_id}")
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

    # ---- studies ----------------------------------------------------------------------------------------------
    @app.get("/studies")
    def studies_page(request: Request):
        found = []
        for path in studies.find_studies(state.workspace):
            for view in studies.read_study(path):
                points = [(t["number"], t["value"]) for t in view.trials if t["value"] is not None]
                best_so_far, best = [], None
                for number_, value in points:
                    better = best is None or (value < best if view.direction == "minimize" else value > best)
                    best = value if better else best
                    best_so_far.append((number_, best))
                found.append((view, charts.line_chart({"trial value": points, "best so far": best_so_far},
                                                      x_label="trial", y_label="objective", width=1080),
                              studies.study_results(path)))
        return page(request, "studies.html", studies=found)

    @app.get("/studies/{name}/study.html")
    def study_report(name: str):
        path = next((p for p in studies.find_studies(state.workspace) if p.name == name), None)
        if path is None or not (path / "study.html").is_file():
            raise TuneloopError(f"{name}: no study report (study.html is written when the study finishes).")
        return FileResponse(path / "study.html", media_type="text/html")

    @app.get("/favicon.ico")
    def favicon():
        return Response(status_code=204)

    return app
