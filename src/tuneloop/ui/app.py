"""The UI's FastAPI app: templates, sign-in, plain messages for user errors; the pages' routes are added from
run_pages, new_run_pages and feedback_pages.

Pages are Jinja2 templates; the only script is static/live.js (polls the live endpoint). A TuneloopError
raised by any route (a bad upload, an invalid value, a missing run) becomes a page with its message and one
log line, never a traceback.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlparse

from fastapi import FastAPI, Form, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from tuneloop.errors import TuneloopError
from tuneloop.serve.store import Store
from tuneloop.ui import feedback_pages, new_run_pages, run_pages
from tuneloop.ui.auth import COOKIE, OPEN_PATHS, UiAuth
from tuneloop.ui.chat import ChatModels

HERE = Path(__file__).parent
log = logging.getLogger("tuneloop.ui")


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
        origin = request.headers.get("origin")
        if request.method != "GET" and origin and urlparse(origin).netloc != request.headers.get("host"):
            # Another site's page posting to this UI (cross-site request forgery): even on loopback, refuse it.
            return JSONResponse({"error": f"refused a {request.method} from another site ({origin})"},
                                status_code=403)
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

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError):
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or e['loc'][0]}: {e['msg']}"
                             for e in exc.errors())
        return await user_error(request, TuneloopError(f"The request was incomplete or malformed: {problems}."))

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

    run_pages.add_routes(app, state, page)
    new_run_pages.add_routes(app, state, page)
    feedback_pages.add_routes(app, state, page)

    @app.get("/favicon.ico")
    def favicon():
        return Response(status_code=204)

    return app
