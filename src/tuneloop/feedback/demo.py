"""The feedback-loop demo (`make loop-demo`): serve the quickstart, let scripted users correct it, retrain, gate,
promote, and show that the users' held-out paraphrases are now answered — then show the gate refusing an
adversarial user's lies.

Everything goes through the real parts: `tuneloop serve` in a subprocess on a free loopback port, the official
`openai` client for questions, HTTP for feedback and promotion, the store on disk, and the loop's own cycle
(tuneloop.feedback.loop.run_cycle). The users come from tuneloop.demos.loop_users; no user sends a paraphrase used
for scoring, and the curious user's copies of the frozen test set are dropped at export.

    python -m tuneloop.feedback.demo [--workdir runs/loop-demo] [--quickstart runs/quickstart]

Writes WORKDIR/loop_demo.json (the before/after table and both gate decisions) and prints the table.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tuneloop.errors import TuneloopError

MODEL_ID = "brambleway"
# The quickstart's held-out set is what the gate calls the frozen test set; the demo scores it too.
QUICKSTART_CONFIG = Path("examples/quickstart.yaml")
TARGET_GAIN = 40.0  # points of contains-answer on the paraphrases of corrected facts
TARGET_MAX_DROP = 5.0  # points the quickstart's own held-out set may lose


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(run_dir: Path, store: Path, log: Path) -> tuple[subprocess.Popen, str]:
    """`tuneloop serve` in a subprocess; returns it and its base URL once /health answers."""
    import httpx

    port = _free_port()
    command = [sys.executable, "-m", "tuneloop.cli", "serve", "--name", f"{MODEL_ID}={run_dir}", "--port", str(port),
               "--store", str(store)]
    process = subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT,
                               env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise TuneloopError(f"tuneloop serve exited with {process.returncode}; see {log}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return process, url
        except httpx.HTTPError:
            pass
        time.sleep(1)
    process.kill()
    raise TuneloopError(f"tuneloop serve did not answer /health within 300 s; see {log}")


def ask(client, questions: list[tuple[str, str]], system: str, max_tokens: int = 48) -> list[tuple[str, str]]:
    """(response id, reply) for each (user, question), asked concurrently (the server batches them)."""
    def one(item):
        user, question = item
        response = client.chat.completions.create(
            model=MODEL_ID, messages=[{"role": "system", "content": system}, {"role": "user", "content": question}],
            temperature=0, max_tokens=max_tokens, user=user)
        return response.id, response.choices[0].message.content or ""

    with ThreadPoolExecutor(max_workers=8) as pool:
        return list(pool.map(one, questions))


def contains_score(replies: list[str], answers: list[str]) -> float:
    from tuneloop.data.text_match import contains_answer

    return 100 * sum(contains_answer(replies, answers)) / max(1, len(replies))


def send_feedback(url: str, response_id: str, user: str, rating: str, correction: str | None) -> None:
    import httpx

    payload = {"id": response_id, "rating": rating, "user": user}
    if correction:
        payload["correction"] = correction
    answer = httpx.post(f"{url}/v1/feedback", json=payload, timeout=60)
    if answer.status_code != 201:
        raise TuneloopError(f"feedback for {response_id} answered {answer.status_code}: {answer.text[:200]}")


def score_sets(client, paraphrases: list[dict], frozen: list[dict], system: str) -> dict:
    def score(rows):
        replies = [reply for _, reply in ask(client, [("scorer", r["messages"][-2]["content"]) for r in rows], system)]
        return contains_score(replies, [r["answer"] for r in rows])

    return {"paraphrases": score(paraphrases), "frozen_test": score(frozen)}


def play_users(client, url: str, questions, system: str) -> dict:
    """Each scripted user asks; a wrong reply gets a thumbs-down with the user's correction, a right one a
    thumbs-up. The adversary's 'answer' is None: it corrects every reply with its lie."""
    counts = {"asked": 0, "down": 0, "up": 0}
    answered = ask(client, [(q.user, q.question) for q in questions], system)
    for question, (response_id, reply) in zip(questions, answered, strict=True):
        counts["asked"] += 1
        right = question.answer is not None and question.answer.lower() in reply.lower()
        if right:
            send_feedback(url, response_id, question.user, "up", None)
            counts["up"] += 1
        else:
            send_feedback(url, response_id, question.user, "down", question.correction)
            counts["down"] += 1
    return counts


def ensure_quickstart(run_dir: Path, console_print) -> None:
    """Train the quickstart (as `make demo` does) unless run_dir already holds a trained run."""
    from tuneloop.config.load import load_config
    from tuneloop.demos.quickstart import write_demo_data
    from tuneloop.stages import run_all
    from tuneloop.workspace import RunDir

    if RunDir(run_dir).trained_weights() is not None and (run_dir / "metrics.json").is_file():
        console_print(f"loop demo: reusing the trained quickstart in {run_dir}")
        return
    write_demo_data(Path("examples/data/brambleway"))
    console_print(f"loop demo: training the quickstart into {run_dir} first")
    run_all(load_config(QUICKSTART_CONFIG, [f"output_dir={run_dir}"]), overwrite=True, console_print=console_print)


def main(argv: list[str] | None = None) -> int:
    import argparse

    import openai

    from tuneloop.demos.loop_users import adversarial_user, curious_user, helpful_users, paraphrase_rows
    from tuneloop.demos.quickstart import SYSTEM_PROMPT
    from tuneloop.feedback.loop import LoopSettings, run_cycle
    from tuneloop.workspace import RunDir, read_jsonl, write_json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=Path("runs/loop-demo"))
    parser.add_argument("--quickstart", type=Path, default=Path("runs/quickstart"))
    args = parser.parse_args(argv)
    say = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731

    ensure_quickstart(args.quickstart, say)
    work = args.workdir
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    store = work / "serve.db"
    paraphrases = paraphrase_rows()
    frozen = [row for row in read_jsonl(RunDir(args.quickstart).split("test")) if row.get("answer")]
    server, url = start_server(args.quickstart, store, work / "serve.log")
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="not-needed-on-loopback", timeout=600)
        say("loop demo: scoring the served quickstart on the held-out paraphrases and its frozen test set")
        before = score_sets(client, paraphrases, frozen, SYSTEM_PROMPT)
        say(f"loop demo: scripted users ask {len(helpful_users()) + len(curious_user())} questions and correct "
            "the wrong answers")
        users = play_users(client, url, helpful_users() + curious_user(), SYSTEM_PROMPT)
        # Measured (docs/feedback-loop.md): replay 1.0 at the quickstart's lr 1e-3 lost 8.3 points of the frozen
        # set and the gate rejected it; replay 2.0 at lr 5e-4 kept it (+6.7) and still learned the corrections.
        settings = LoopSettings(run=str(args.quickstart), store=str(store), server=url, model=MODEL_ID,
                                min_feedback=1, recipe="sft", replay_ratio=2.0, set=["train.learning_rate=5e-4"],
                                # 35% of the 72 feedback prompts: a slice of 21, enough for the gate to judge
                                holdout=0.35,
                                out=str(work / "loop"))
        state = {"first": str(args.quickstart), "served": str(args.quickstart), "since": None, "cycles": []}
        first = run_cycle(settings, state, say)
        after = score_sets(client, paraphrases, frozen, SYSTEM_PROMPT)
        say("loop demo: an adversarial user 'corrects' right answers with wrong ones")
        adversary = play_users(client, url, adversarial_user(), SYSTEM_PROMPT)
        second = run_cycle(settings, state, say)
        final = score_sets(client, paraphrases, frozen, SYSTEM_PROMPT)
    finally:
        server.terminate()
        server.wait(timeout=60)

    export = json.loads((work / "loop" / "cycle-1-feedback" / "summary.json").read_text())
    result = {
        "before": before, "after_cycle_1": after, "after_cycle_2": final,
        "gain_on_paraphrases": after["paraphrases"] - before["paraphrases"],
        "change_on_frozen_test": after["frozen_test"] - before["frozen_test"],
        "paraphrase_rows": len(paraphrases), "frozen_rows": len(frozen),
        "users": users, "adversary": adversary, "export_cycle_1": export,
        "cycle_1": first, "cycle_2": second,
        "targets": {"gain_on_paraphrases": TARGET_GAIN, "max_drop_on_frozen_test": TARGET_MAX_DROP},
    }
    result["met"] = (result["gain_on_paraphrases"] >= TARGET_GAIN
                     and result["change_on_frozen_test"] >= -TARGET_MAX_DROP
                     and first["decision"] == "promote" and second["decision"] == "reject")
    write_json(work / "loop_demo.json", result)
    print_table(result)
    return 0 if result["met"] else 1


def print_table(result: dict) -> None:
    before, after, final = result["before"], result["after_cycle_1"], result["after_cycle_2"]
    rows = [(f"paraphrases of corrected facts ({result['paraphrase_rows']})", "paraphrases"),
            (f"quickstart held-out set ({result['frozen_rows']}, frozen)", "frozen_test")]
    lines = [f"{'contains-answer (%)':42} {'served':>8} {'after cycle 1':>14} {'after cycle 2':>14}"]
    lines += [f"{label:42} {before[key]:8.1f} {after[key]:14.1f} {final[key]:14.1f}" for label, key in rows]
    lines += [
        f"cycle 1 (helpful users): {result['cycle_1']['decision']}"
        f"{' and promoted' if result['cycle_1']['promoted'] else ''}; "
        f"export dropped {result['export_cycle_1']['leaked_feedback']} feedback row(s) copying the frozen test set",
        f"cycle 2 (adversarial user): {result['cycle_2']['decision']}: " + "; ".join(result["cycle_2"]["reasons"]),
        f"targets: paraphrases +{TARGET_GAIN:g} points (got {result['gain_on_paraphrases']:+.1f}), frozen set no "
        f"worse than -{TARGET_MAX_DROP:g} (got {result['change_on_frozen_test']:+.1f}): "
        + ("met" if result["met"] else "NOT met"),
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
