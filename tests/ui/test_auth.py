"""UI auth: beyond loopback the UI refuses to start without a password or key; with one, the browser signs in."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest
from ui_helpers import UiServer, browser, page, ui_env

from tuneloop.errors import ConfigError
from tuneloop.ui.auth import build_auth


def test_refuses_to_bind_beyond_loopback_without_a_password(tmp_path):
    started = subprocess.run([sys.executable, "-m", "tuneloop.cli", "ui", str(tmp_path / "runs"), "--host", "0.0.0.0",
                              "--port", "7999"], env={**ui_env(), "TUNELOOP_UI_PASSWORD": ""}, capture_output=True,
                             text=True, timeout=60)
    assert started.returncode == 2
    assert "--host 0.0.0.0" in started.stderr and "--password-file" in started.stderr
    assert "Traceback" not in started.stderr


def test_binding_rules():
    assert not build_auth("127.0.0.1", None, None).enabled  # loopback: open
    with pytest.raises(ConfigError, match="no password"):
        build_auth("192.168.1.20", None, None)
    assert build_auth("192.168.1.20", None, None, insecure_no_auth=True) is not None


def test_short_password_is_refused(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("short\n")
    with pytest.raises(ConfigError, match="shorter than 8"):
        build_auth("0.0.0.0", secret, None)


def test_password_guards_every_page_and_the_api(page, tmp_path):
    secret = tmp_path / "password"
    secret.write_text("correct horse battery\n")
    (tmp_path / "examples").mkdir()
    server = UiServer(tmp_path / "runs", tmp_path / "examples", tmp_path / "ui.log", "--password-file", str(secret))
    try:
        assert httpx.get(f"{server.url}/api/runs/x/live").status_code == 401
        assert httpx.post(f"{server.url}/chat/feedback", data={"request_id": "x"}).status_code == 401
        assert httpx.get(f"{server.url}/api/runs/x/live",
                         headers={"Authorization": "Bearer correct horse battery"}).status_code == 400  # no such run
        page.goto(f"{server.url}/inbox")
        assert "/login" in page.url
        page.fill("input[name=password]", "wrong password")
        page.click("text=Sign in >> nth=-1")
        assert "Wrong password" in page.inner_text("main")
        page.fill("input[name=password]", "correct horse battery")
        page.click("button[type=submit]")
        page.wait_for_url(f"{server.url}/inbox")
        assert "Feedback inbox" in page.inner_text("h1")
    finally:
        server.stop()
