"""A/B splits (weights, stickiness), --name/--split parsing, API keys and the loopback rule."""

from __future__ import annotations

import math

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tuneloop.cli import app as cli_app
from tuneloop.errors import ConfigError
from tuneloop.serve import auth
from tuneloop.serve.app import create_app
from tuneloop.serve.routing import Router, parse_split, plan_models
from tuneloop.serve.server import ServeOptions, build_state


def test_split_follows_its_weights_and_sticks_to_each_user():
    router = Router(["a", "b"], {"bot": [("a", 90.0), ("b", 10.0)]})
    users = [f"user-{i}" for i in range(20_000)]
    chosen = [router.route("bot", user) for user in users]
    share_b = chosen.count("b") / len(users)
    tolerance = 4 * math.sqrt(0.1 * 0.9 / len(users))  # four standard errors
    assert abs(share_b - 0.10) < tolerance, share_b
    assert all(router.route("bot", user) == first for user, first in zip(users[:500], chosen, strict=False))
    # No user: a fresh draw each time, still by the weights.
    anonymous = [router.route("bot", None) for _ in range(4000)]
    assert abs(anonymous.count("b") / 4000 - 0.10) < 4 * math.sqrt(0.09 / 4000)
    assert router.route("nope", "x") is None and router.route("a", "x") == "a"


def test_split_and_name_parsing(adapter_runs):
    assert parse_split("bot=a:90,b:10").variants == (("a", 90.0), ("b", 10.0))
    for bad in ("bot", "bot=a:90", "bot=a:x,b:1", "=a:1,b:1", "bot=a:0,b:0"):
        with pytest.raises(ConfigError, match="--split"):
            parse_split(bad)
    served, splits = plan_models([], ["prod=" + str(adapter_runs["alpha"])],
                                 [f"bot=prod:70,{adapter_runs['beta']}:30"])
    assert set(served) == {"prod", "beta"} and splits["bot"] == [("prod", 70.0), ("beta", 30.0)]
    with pytest.raises(ConfigError, match="neither a served model id"):
        plan_models([adapter_runs["alpha"]], [], ["bot=alpha:1,missing:1"])


def test_api_keys_guard_every_route_but_health(adapter_runs, tmp_path):
    keys = tmp_path / "keys"
    keys.write_text("key-one-0123456789abcdef\nkey-two-0123456789abcdef\n")
    state = build_state(ServeOptions(run_dirs=[adapter_runs["alpha"]], api_key_file=keys, no_store=True), say=print)
    assert all(len(h) == 32 for h in state.key_hashes)  # only hashes are kept
    with TestClient(create_app(state)) as client:
        assert client.get("/health").status_code == 200
        for path in ("/v1/models", "/metrics"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers={"authorization": "Bearer key-wrong-0123456789abc"}).status_code == 401
            assert client.get(path, headers={"authorization": "Bearer key-two-0123456789abcdef"}).status_code == 200
        refused = client.post("/v1/chat/completions", json={"model": "alpha", "messages": []})
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        no_store = client.post("/v1/feedback", json={"id": "chatcmpl-x", "rating": "up"},
                               headers={"authorization": "Bearer key-one-0123456789abcdef"})
        assert no_store.status_code == 400 and "--no-store" in no_store.json()["error"]["message"]


def test_binding_beyond_loopback_needs_keys_or_an_explicit_flag(adapter_runs, tmp_path):
    auth.check_binding("127.0.0.1", False, False)
    auth.check_binding("::1", False, False)
    auth.check_binding("0.0.0.0", True, False)
    auth.check_binding("0.0.0.0", False, True)
    with pytest.raises(ConfigError, match="--api-key-file"):
        auth.check_binding("0.0.0.0", False, False)
    result = CliRunner().invoke(cli_app, ["serve", str(adapter_runs["alpha"]), "--host", "0.0.0.0"])
    assert result.exit_code != 0 and "--insecure-no-auth" in str(result.exception)
    (tmp_path / "short").write_text("abc\n")
    with pytest.raises(ConfigError, match="shorter than 16"):
        auth.read_key_file(tmp_path / "short")
    assert auth.key_allowed("k" * 20, [auth.hash_key("k" * 20)]) and not auth.key_allowed("k" * 21,
                                                                                          [auth.hash_key("k" * 20)])
