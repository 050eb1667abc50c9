"""Routes of the New run pages: from an example or an upload, the audit and the form, validation, start."""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, File, Form, Request, UploadFile
from fastapi.responses import RedirectResponse

from tuneloop.ui import new_run

log = logging.getLogger("tuneloop.ui")


def add_routes(app: FastAPI, state, page) -> None:
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
