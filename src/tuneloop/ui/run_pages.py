"""Routes of the workspace pages: runs table, compare, a run (live view, files, stop, resume, export), jobs, studies."""

from __future__ import annotations

import time
from pathlib import Path

from fastapi import FastAPI, Form, Query, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse

from tuneloop.errors import TuneloopError
from tuneloop.ui import charts, jobs, runs, studies

EXPORT_FORMATS = ("hf", "gguf", "ollama", "vllm")
VIEWABLE = {".html": "text/html", ".json": "application/json", ".jsonl": "text/plain", ".txt": "text/plain",
            ".md": "text/plain", ".yaml": "text/plain"}


def add_routes(app: FastAPI, state, page) -> None:
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
