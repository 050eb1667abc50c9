"""The audit that opens `tuneloop run`: write audit/ in the run directory, print the summary, enforce limits."""

from __future__ import annotations

from tuneloop.config.schema import AuditConfig
from tuneloop.data.audit import AuditOptions, audit_loaded
from tuneloop.data.audit_html import render_audit_html
from tuneloop.data.prepare import LoadedFile
from tuneloop.errors import DataError
from tuneloop.workspace import RunDir, write_json, write_text


def audit_run_data(config: AuditConfig, loaded: list[LoadedFile], run: RunDir, console_print=print) -> dict:
    options = AuditOptions(near_threshold=config.near_threshold, expected_language=config.expected_language,
                           checks=tuple(config.checks), show_progress=False)
    report = audit_loaded(loaded, options)
    write_json(run.root / "audit" / "audit.json", report)
    write_text(run.root / "audit" / "audit.html", render_audit_html(report, f"Data audit: {run.root.name}"))
    for item in report["summary"]:
        console_print(f"audit: {item['severity']}: {item['message']}")
    console_print(f"audit: {len(report['summary'])} finding(s); report in {run.root / 'audit' / 'audit.html'}")
    _enforce_limits(config, report, run)
    return report


def _enforce_limits(config: AuditConfig, report: dict, run: RunDir) -> None:
    leaked = sum(found["exact"]["rows"] + found["near"]["rows"] for found in report.get("leakage", {}).values())
    measured = {
        "max_leaked_rows": leaked,
        "max_duplicate_rows": report.get("duplicates", {}).get("exact", {}).get("duplicate_rows", 0),
        "max_pii_rows": report.get("pii", {}).get("rows_with_pii", 0),
    }
    fixes = {
        "max_leaked_rows": "remove them from the evaluation file (`tuneloop data split` keeps near copies together)",
        "max_duplicate_rows": "deduplicate with `tuneloop data clean --dedup exact`",
        "max_pii_rows": "redact with `tuneloop data clean --redact-pii`",
    }
    for key, value in measured.items():
        limit = getattr(config, key)
        if limit is not None and value > limit:
            raise DataError(
                f"data.audit.{key}={limit}: the data has {value}. See {run.root / 'audit' / 'audit.html'}; "
                f"{fixes[key]}, or raise the limit."
            )
