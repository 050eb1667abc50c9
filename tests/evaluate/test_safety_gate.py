"""The safety gate on an SFT run: base and tuned replies to the gate's prompts scored by a reward run."""

from __future__ import annotations

from tuneloop.config.load import validate_config
from tuneloop.stages import run_all
from tuneloop.workspace import read_json


def test_an_sft_run_with_evaluate_safety_records_the_gate_verdict(tiny_config, tiny_reward_run, pair_files):
    tiny_config["train"].update(max_steps=2, eval_every=2, save_every=2)
    tiny_config["evaluate"].update(max_samples=4, safety={"prompts": str(pair_files["test"]),
                                                         "scorer": str(tiny_reward_run), "max_prompts": 4})
    run, results = run_all(validate_config(tiny_config), console_print=lambda *_: None)
    gate = results["safety"]
    assert gate["prompts"] == 4 and gate["rule"].startswith("fails when")
    assert gate["passed"] == (not gate["failures"]) and results["status"] == ("passed" if gate["passed"] else "failed")
    assert read_json(run.metrics)["safety"]["scorer"] == str(tiny_reward_run)
