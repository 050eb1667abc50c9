"""Promote a gated run to a running `tuneloop serve`, or roll the last promotion back: the client side.

The server swaps the weights behind a model id while it serves (its admin routes, tuneloop.serve.app):
requests already being answered finish on the old weights, new ones get the new weights, and the store
records which version answered each request. Only a run whose promotion.json says "promote" is sent, unless
forced.
"""

from __future__ import annotations

from pathlib import Path

from tuneloop.errors import TuneloopError


def _post(server: str, path: str, payload: dict | None, api_key: str | None, timeout: float = 600.0) -> dict:
    """POST payload to the server's path (GET when payload is None); the answer, or a TuneloopError saying why."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    url = server.rstrip("/").removesuffix("/v1") + path
    try:
        response = (httpx.get(url, headers=headers, timeout=timeout) if payload is None
                    else httpx.post(url, json=payload, headers=headers, timeout=timeout))
    except httpx.HTTPError as exc:
        raise TuneloopError(f"--server {server}: cannot reach the server ({exc}). Is `tuneloop serve` running "
                            "there?") from None
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        raise TuneloopError(f"--server {server}: {path} answered {response.status_code}: {message}")
    return response.json()


def read_api_key(api_key_file: Path | None) -> str | None:
    """The first key in a key file (the same file `tuneloop serve --api-key-file` reads), or None."""
    if api_key_file is None:
        return None
    if not Path(api_key_file).is_file():
        raise TuneloopError(f"--api-key-file {api_key_file}: no such file.")
    keys = [line.strip() for line in Path(api_key_file).read_text().splitlines()
            if line.strip() and not line.startswith("#")]
    if not keys:
        raise TuneloopError(f"--api-key-file {api_key_file}: holds no key.")
    return keys[0]


def promote(run_dir: Path, server: str, model: str, api_key: str | None = None, force: bool = False) -> dict:
    """Serve run_dir under model id `model` from now on; returns the server's answer (versions old and new)."""
    from tuneloop.feedback.retrain import read_promotion

    run_dir = Path(run_dir)
    decision = read_promotion(run_dir)
    if decision["decision"] != "promote" and not force:
        reasons = "; ".join(decision.get("reasons", []))
        raise TuneloopError(f"{run_dir}: the gate rejected this run ({reasons}). The served model stays; pass "
                            "--force to promote it anyway.")
    return _post(server, "/admin/promote", {"model": model, "run_dir": str(run_dir.resolve())}, api_key)


def rollback(server: str, model: str, api_key: str | None = None) -> dict:
    """Serve the weights model id `model` had before its last promotion."""
    return _post(server, "/admin/rollback", {"model": model}, api_key)


def served_run_dir(server: str, model: str, api_key: str | None = None) -> Path | None:
    """The run directory the server answers model id `model` from now (None when its weights came from no run)."""
    from urllib.parse import quote

    root = _post(server, f"/v1/models/{quote(model, safe='')}", None, api_key, timeout=30.0).get("root")
    return Path(root) if root else None
