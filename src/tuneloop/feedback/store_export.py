"""Export a serve store's feedback as training files with their audit: what `tuneloop feedback export` and each
loop cycle run (the rules themselves are tuneloop.feedback.export's)."""

from __future__ import annotations

from pathlib import Path

from tuneloop.errors import TuneloopError


def store_url_of(store: str) -> str:
    """A SQLAlchemy URL from a store argument: a URL as given, an existing file as SQLite."""
    if "://" in store:
        return store
    path = Path(store)
    if not path.is_file():
        raise TuneloopError(f"{store}: no such store file. Give the SQLite file `tuneloop serve --store` writes "
                            "(serve.db by default), or a postgresql+psycopg:// URL.")
    return f"sqlite:///{path.resolve()}"


def export_store(store: str, out: Path, run_dir: Path | None = None, since: str | None = None,
                 model: str | None = None, console_print=print, reviewed_only: bool = False,
                 until: str | None = None) -> dict:
    """Export the store's feedback to out/, dropping prompts that copy run_dir's frozen test set; audit it.

    since and until bound the feedback's time (since inclusive, until exclusive): a loop cycle's window.
    """
    from tuneloop.data.audit import AuditOptions, audit_files
    from tuneloop.data.audit_html import render_audit_html
    from tuneloop.feedback.export import export_feedback
    from tuneloop.feedback.store_reader import read_feedback
    from tuneloop.serve.store import parse_since  # 30m, 24h, 7d or an ISO date, as `tuneloop monitor` takes
    from tuneloop.workspace import open_run_dir, read_jsonl, write_json, write_text

    test_rows, test_file = [], None
    if run_dir is not None:
        run = open_run_dir(run_dir)
        test_file = run.split("test") if run.split("test").is_file() else None
        test_rows = read_jsonl(test_file) if test_file else []
        if test_file is None:
            console_print(f"feedback: {run.root} has no test split; leakage into a test set cannot be checked")
    else:
        console_print("feedback: no --run given, so feedback copying a run's test questions is not dropped; "
                      "pass --run RUN_DIR before training on this export")
    ratings, pairs = read_feedback(store_url_of(store), parse_since(since), model, reviewed_only,
                                   parse_since(until))
    summary = export_feedback(ratings, pairs, out, test_rows)
    sft = out / "sft.jsonl"
    if summary["sft_rows"]:
        report = audit_files([str(sft)] + ([str(test_file)] if test_file else []),
                             AuditOptions(show_progress=False))
        write_json(out / "audit.json", report)
        write_text(out / "audit.html", render_audit_html(report, "Feedback export audit"))
        summary["audit"] = [f"{item['severity']} {item['check']}: {item['message']}" for item in report["summary"]]
        write_json(out / "summary.json", summary)
    console_print(describe_export(summary, out))
    return summary


def describe_export(summary: dict, out: Path) -> str:
    lines = [f"feedback: {summary['feedback_rows']} rating(s)/correction(s) and {summary['pairwise_rows']} pairwise "
             f"pick(s) on {summary['prompts']} prompt(s) -> {out}",
             f"  sft.jsonl {summary['sft_rows']}, thumbs_up.jsonl {summary['thumbs_up_rows']}, preference.jsonl "
             f"{summary['preference_rows']}, kto.jsonl {summary['kto_rows']} row(s)"]
    dropped = [(summary["leaked_feedback"], f"dropped: copy the frozen test set ({summary['leaked_prompts']} "
                                            "prompt(s))"),
               (summary["overruled_corrections"], "corrections overruled by another correction of the same prompt"),
               (summary["conflicting_ratings"], "replies rated up and down by as many users (dropped)"),
               (summary["conflicting_pairs"], "pairwise picks tied (dropped)"),
               (summary.get("empty_replies", 0), "empty replies left out of preference and kto rows"),
               (summary["neutral_ratings"], "neutral ratings (3) ignored")]
    lines += [f"  {count} {what}" for count, what in dropped if count]
    lines += [f"  audit: {line}" for line in summary.get("audit", [])[:5]]
    return "\n".join(lines)
