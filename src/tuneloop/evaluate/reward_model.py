"""The evaluate stage of reward runs: held-out pair accuracy of the reward model against chance.

evaluate_reward_run scores held-out pairs with the run's reward model (tuneloop.models.reward_scorer):
pair_accuracy is the share of pairs whose chosen reply scores higher, against the constant baseline of 50%
(a scorer that cannot tell the replies apart), with a 95% bootstrap interval and a one-sample bootstrap test
against 50.
"""

from __future__ import annotations

import numpy as np

from tuneloop.errors import TuneloopError
from tuneloop.models.reward_scorer import load_reward_scorer


def evaluate_reward_run(config, run, data_file: str | None = None, console_print=print) -> dict:
    """Held-out pair accuracy of a reward run against the constant 50% baseline; writes metrics.json."""
    from tuneloop.evaluate.heldout import heldout_examples
    from tuneloop.evaluate.preference import preference_file_format
    from tuneloop.evaluate.stats import bootstrap_interval, compare
    from tuneloop.models.device import pick_device
    from tuneloop.workspace import read_jsonl, write_json, write_jsonl

    pairs, heldout_name = heldout_examples(config, run, data_file, preference_file_format(config))
    pairs = [ex for ex in pairs if "chosen" in ex]
    if not pairs:
        raise TuneloopError(f"evaluate: {heldout_name} holds no preference pairs to score the reward model on.")
    scorer = load_reward_scorer(run.root, device=pick_device(config.model.device), max_length=config.data.max_length,
                                batch_size=config.evaluate.batch_size)
    prompts = [ex["prompt"] for ex in pairs]
    chosen = np.asarray(scorer.score(prompts, [ex["chosen"] for ex in pairs]))
    rejected = np.asarray(scorer.score(prompts, [ex["rejected"] for ex in pairs]))
    correct = np.where(chosen > rejected, 100.0, 0.0)
    constant = np.full(len(pairs), 50.0)
    results = {
        "heldout": {"split": heldout_name, "rows": len(pairs)},
        "validation": {"rows": len(read_jsonl(run.split("validation")))},
        "baseline": {"pair_accuracy": 50.0},
        "tuned": {"pair_accuracy": float(correct.mean()), "reward_margin": float((chosen - rejected).mean())},
        "intervals": {"tuned": {"pair_accuracy": list(bootstrap_interval(correct)),
                                "reward_margin": list(bootstrap_interval(chosen - rejected))}},
        "comparison": {"pair_accuracy": compare(constant, correct, binary=False)},
        "reward": {"baseline": "constant 50%: a scorer that cannot tell chosen from rejected",
                   "chosen_mean": float(chosen.mean()), "rejected_mean": float(rejected.mean())},
        "status": "passed", "failures": [],
    }
    results["delta"] = {"pair_accuracy": results["tuned"]["pair_accuracy"] - 50.0}
    write_json(run.metrics, results)
    write_jsonl(run.samples, [
        {"prompt": ex["prompt"], "reference": ex["chosen"], "rejected": ex["rejected"], "baseline": None,
         "tuned": f"reward: chosen {c:.3f}, rejected {r:.3f}"}
        for ex, c, r in list(zip(pairs, chosen, rejected, strict=True))[:50]])
    console_print(f"evaluate: reward model pair accuracy {correct.mean():.1f}% on {len(pairs)} held-out pairs "
                  "(constant baseline 50%)")
    return results
