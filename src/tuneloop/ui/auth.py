"""Who may use the UI: loopback needs nothing; any other host needs a password or an API key (serve's rules).

A browser signs in once with the password and gets a session cookie (an HMAC of a per-process secret, so a
UI restart signs everyone out); scripts send `Authorization: Bearer KEY` with a key from --api-key-file.
Without a password or keys the UI refuses to bind beyond loopback, unless --insecure-no-auth says so on purpose.
Whatever the binding, a form post whose Origin is another site is refused (app.py), so a web page open in the
same browser cannot start or stop runs on a loopback UI.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

from tuneloop.errors import ConfigError
from tuneloop.serve.auth import bearer, is_loopback, key_allowed, read_key_file

COOKIE = "tuneloop_ui_session"
PASSWORD_ENV = "TUNELOOP_UI_PASSWORD"
OPEN_PATHS = ("/login", "/static/", "/health")


@dataclass
class UiAuth:
    password_hash: bytes | None = None
    key_hashes: list[bytes] = field(default_factory=list)
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))

    @property
    def enabled(self) -> bool:
        return self.password_hash is not None or bool(self.key_hashes)

    def password_ok(self, password: str) -> bool:
        if self.password_hash is None:
            return False
        return hmac.compare_digest(hashlib.sha256(password.encode()).digest(), self.password_hash)

    def session_token(self) -> str:
        return hmac.new(self.secret, b"signed-in", hashlib.sha256).hexdigest()

    def allowed(self, cookie: str | None, authorization: str | None) -> bool:
        if not self.enabled:
            return True
        if cookie and hmac.compare_digest(cookie, self.session_token()):
            return True
        presented = bearer(authorization)
        return key_allowed(presented, self.key_hashes) or (presented is not None and self.password_ok(presented))


def read_password(path: Path | None) -> str | None:
    """The password from --password-file (first line), else from $TUNELOOP_UI_PASSWORD, else None."""
    if path is not None:
        try:
            lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        except OSError as exc:
            raise ConfigError(f"--password-file {path}: cannot read it ({exc.strerror}).") from None
        if not lines:
            raise ConfigError(f"--password-file {path}: it is empty; put the password on its first line.")
        password = lines[0]
    else:
        password = os.environ.get(PASSWORD_ENV) or None
    if password is not None and len(password) < 8:
        raise ConfigError(f"the UI password is shorter than 8 characters (from "
                          f"{'--password-file ' + str(path) if path else '$' + PASSWORD_ENV}); use a longer one.")
    return password


def build_auth(host: str, password_file: Path | None, api_key_file: Path | None,
               insecure_no_auth: bool = False) -> UiAuth:
    password = read_password(password_file)
    keys = read_key_file(api_key_file) if api_key_file else []
    if not (is_loopback(host) or password or keys or insecure_no_auth):
        raise ConfigError(f"--host {host}: the UI would be reachable from other machines with no password. Give "
                          f"--password-file FILE (or set ${PASSWORD_ENV}), or --api-key-file FILE (one key per "
                          "line), or --insecure-no-auth if a proxy in front of it checks access.")
    return UiAuth(hashlib.sha256(password.encode()).digest() if password else None, keys)
