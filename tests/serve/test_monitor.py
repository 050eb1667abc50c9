"""`tuneloop monitor` on a store filled by a scripted A/B session through the app."""

from __future__ import annotations

import random

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from tuneloop.cli import app as cli_app
from tuneloop.serve import monitor_stats as ms
from tuneloop.serve.app import Limits, create_app
from tuneloop.serve.server import ServeOptions, build_state
from tuneloop.serve.store import read_tables

IN_DOMAIN = ["When do the Larkspur stores open?", "How long is the warranty?", "Where is the head office?",
             "What does a tune-up cost?", "Which day are the shops closed?", "How far does the e-bike go?"]
FAR = ["Write a sonnet about quantum chromodynamics and gluons", "Translate my tax return into legal Latin verse",
       "Quelle est la capitale de la Mongolie et pourquoi ?", "Explique-moi la photosynthèse en détail, s'il te plaît"]


def scripted_session(client, users: int = 24, seed: int = 0) -> None:
    """Users ask (mostly in-domain, some far and French, a few with an email); beta's replies get more thumbs-up."""
    rng = random.Random(seed)
    for index in range(users):
        user = f"user-{index}"
        for turn in range(2):
            prompt = rng.choice(FAR) if rng.random() < 0.35 else rng.choice(IN_DOMAIN)
            if turn == 1 and index % 7 == 0:
                prompt += " Reach me at someone@example.org"
            reply = client.post("/v1/chat/completions", json={
                "model": "bot", "user": user, "max_tokens": 4, "temperature": 0,
                "messages": [{"role": "user", "content": prompt}]}).json()
            variant = "beta" if reply["id"] else None
            stored_variant = client.app.state.serve.router.route("bot", user)
            up = rng.random() < (0.85 if stored_variant == "beta" else 0.35)
            client.post("/v1/feedback", json={"id": reply["id"], "rating": "up" if up else "down",
                                              **({"correction": "Open at 7:30."} if not up else {})})
            assert variant
    client.post("/v1/chat/completions", json={"model": "gamma", "messages": [{"role": "user", "content": "x"}]})


@pytest.fixture(scope="module")
def store_url(adapter_runs, tmp_path_factory):
    path = tmp_path_factory.mktemp("monitor") / "serve.db"
    state = build_state(ServeOptions(run_dirs=[adapter_runs["alpha"], adapter_runs["beta"]], store=str(path),
                                     splits=["bot=alpha:50,beta:50"], limits=Limits(default_max_tokens=4)),
                        say=lambda _m: None)
    with TestClient(create_app(state)) as client:
        scripted_session(client)
    return f"sqlite:///{path}"


def test_monitor_page_has_every_section_and_the_drift_alert(store_url, tmp_path):
    out = tmp_path / "monitor.html"
    result = CliRunner().invoke(cli_app, ["monitor", store_url, "--out", str(out), "--drift-threshold", "0.2"])
    assert result.exit_code == 0, result.output
    page = out.read_text()
    for heading in ("Traffic", "Latency", "Errors", "Feedback", "A/B: does variant B", "Drift", "PII",
                    "Most thumbs-down prompts"):
        assert heading in page, heading
    assert page.count("data:image/png;base64,") >= 5 and "<script" not in page and "http" not in page.split("<body>")[1]
    assert "far from every training prompt" in result.output  # ~35% far prompts against a 20% threshold
    assert "404" in page and "someone@example.org" not in page  # stored redacted (the placeholder shows)
    assert "Open at 7:30." in page


def test_feedback_numbers_and_the_two_proportion_test(store_url):
    requests, feedback = read_tables(store_url)
    ratings = ms.latest_ratings(feedback)
    counts = {}
    for variant in ("alpha", "beta"):
        scores = [ratings[r["id"]] for r in requests if r["variant"] == variant and r["id"] in ratings]
        counts[variant] = (sum(s >= ms.POSITIVE_SCORE for s in scores), len(scores))
    test = ms.two_proportion_test(*counts["alpha"], *counts["beta"])
    assert test["difference"] > 0 and test["p_value"] < 0.05  # beta was scripted to please more (85% vs 35%)
    low, high = test["interval"]
    assert low < test["difference"] < high
    assert ms.wilson_interval(0, 10)[0] == 0.0 and ms.wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert ms.wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-3)  # the textbook value


def test_drift_measures_far_share_against_held_out_reference():
    training = [f"How long is the warranty on model {i}?" for i in range(30)] + IN_DOMAIN
    close = ms.prompt_drift(IN_DOMAIN * 3, training, [], threshold=0.3)
    assert close["share_far"] == 0.0 and not close["alerts"]
    far = ms.prompt_drift(FAR * 3, training, [], threshold=0.3)
    assert far["share_far"] > 0.9 and any("far from every training prompt" in a for a in far["alerts"])
    assert far["languages"]["incoming"].get("fr", 0) >= 3
