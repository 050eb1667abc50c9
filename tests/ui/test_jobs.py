"""UI jobs: the worker runs each command in a real subprocess and records how the job ended."""

from __future__ import annotations

import sys
import time

from tuneloop.errors import GATE_FAILED_EXIT_CODE
from tuneloop.ui.jobs import FINAL_STATES, read_job, start_job


def run_job(workspace, commands):
    job = start_job(workspace, "run", "test job", commands)
    deadline = time.time() + 60
    while read_job(job.root).state not in FINAL_STATES:
        assert time.time() < deadline, f"the job did not finish: {job.log_tail()}"
        time.sleep(0.1)
    return read_job(job.root)


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_run_failed_by_its_gates_is_finished_and_stops_the_chain(tmp_path):
    job = run_job(tmp_path, [python(f"import sys; print('gated'); sys.exit({GATE_FAILED_EXIT_CODE})"),
                             python("print('second command ran')")])
    assert job.state == "finished" and job.returncode == GATE_FAILED_EXIT_CODE
    assert job.failure() is None
    assert "gated" in job.log_tail() and "second command ran" not in job.log_tail()


def test_a_crash_is_failed_with_the_cli_error_line(tmp_path):
    job = run_job(tmp_path, [python("import sys; print('error: data.train_file: no such file'); sys.exit(2)")])
    assert job.state == "failed" and job.returncode == 2
    assert job.failure() == "data.train_file: no such file"


def test_commands_run_in_order_when_each_succeeds(tmp_path):
    job = run_job(tmp_path, [python("print('first')"), python("print('second')")])
    assert job.state == "finished" and job.returncode == 0
    log = job.log_tail()
    assert log.index("first") < log.index("second")
