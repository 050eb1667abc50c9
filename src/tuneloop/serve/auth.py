"""API keys: read from --api-key-file, kept only as sha256 hashes, compared in constant time; binding rules.

Every route except GET /health (for load balancers' probes) needs `Authorization: Bearer KEY` once keys are
set. Without keys the server only binds to loopback, unless --insecure-no-auth says otherwise on purpose.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
from pathlib import Path

from tuneloop.errors import ConfigError

OPEN_PATHS = frozenset({"/health"})


def hash_key(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def read_key_file(path: Path) -> list[bytes]:
    """The hashes of the keys in path: one key per line; blank lines and lines starting with # are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"--api-key-file {path}: cannot read it ({exc.strerror}).") from None
    keys = [line.strip() for line in lines if line.strip() and not line.strip().startswith("#")]
    if not keys:
        raise ConfigError(f"--api-key-file {path}: no keys in it (one key per line).")
    short = [n for n, key in enumerate(keys, 1) if len(key) < 16]
    if short:
        raise ConfigError(f"--api-key-file {path}: key {short[0]} is shorter than 16 characters; use long random "
                          "keys, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`.")
    return [hash_key(key) for key in keys]


def key_allowed(presented: str | None, hashes: list[bytes]) -> bool:
    """Whether the presented key is one of the keys; compares against every hash so timing reveals nothing."""
    if presented is None:
        return False
    digest = hash_key(presented)
    matched = False
    for known in hashes:
        matched |= hmac.compare_digest(digest, known)
    return matched


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_binding(host: str, has_keys: bool, insecure_no_auth: bool) -> None:
    """Refuse to listen beyond loopback without API keys unless --insecure-no-auth is given."""
    if is_loopback(host) or has_keys or insecure_no_auth:
        return
    raise ConfigError(f"--host {host}: the server would be reachable from other machines with no API key. "
                      "Give --api-key-file FILE (one key per line), or --insecure-no-auth if a proxy in front "
                      "of it checks access.")
