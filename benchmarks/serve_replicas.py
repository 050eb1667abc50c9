"""Two `tuneloop serve` replicas on one PostgreSQL store under load: one replica killed, PostgreSQL restarted.

    python benchmarks/serve_replicas.py [--minutes 10] [--clients 32] [--json replicas.json]

A throwaway PostgreSQL cluster (tests/postgres_server.py: installed with apt-get when missing, run as the
`postgres` user) holds the store; two replicas serve one LoRA run on smollm2-135m-instruct. The clients act as
a load balancer with passive health checks would (nginx's proxy_next_upstream): each request goes to the next
replica in turn and, when that replica cannot be reached, to the other one. Every reply that got a 200 is
followed by a feedback row sent to a replica picked at random.

At 30% of the time replica A is killed with SIGKILL and started again 10 s later (what a supervisor does); at 60%
PostgreSQL is stopped like a crash (pg_ctl -m immediate) and started again 5 s later. Afterwards the store is
read and compared with what the clients were told. Prints one JSON line: requests and feedback acknowledged and
lost (acknowledged but not stored: the target is 0), the error rate outside the outage windows (target 0) and
inside them (503s with Retry-After while PostgreSQL is down), and p50/p99 latency of answered requests.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "serve"))
from postgres_server import start_postgres  # noqa: E402
from serve_helpers import ServerProcess  # noqa: E402
from serve_load import QUESTIONS, free_port  # noqa: E402
from serve_soak import adapter_run  # noqa: E402

MODEL_ID = "bot"


class Replica:
    """One replica on a port of its own that it keeps across restarts, where the clients look for it."""

    def __init__(self, run: Path, url: str, log: Path):
        self.args = ["--name", f"{MODEL_ID}={run}", "--store", url, "--max-batch-size", "16"]
        self.log = log
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server: ServerProcess | None = None

    def start(self) -> None:
        self.server = ServerProcess(self.args, self.log, port=self.port, start_timeout=180)

    def kill9(self) -> None:
        self.server.kill9()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()


def percentile(values: list[float], share: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    from tuneloop.serve.store import read_tables

    work = Path(tempfile.mkdtemp(prefix="serve-replicas-"))
    postgres = start_postgres()
    url = postgres.create_database()
    run = adapter_run(work, "run", 1)
    replicas = [Replica(run, url, work / f"replica-{name}.log") for name in "ab"]
    for replica in replicas:
        replica.start()
    print(f"serve replicas: 2 replicas up, {args.clients} clients for {args.minutes:g} min; logs in {work}",
          file=sys.stderr, flush=True)

    outcomes: list[dict] = []  # one per request: sent, status, latency, id, feedback status
    lock = threading.Lock()
    stop = threading.Event()
    windows: dict[str, list[float]] = {}

    def client(number: int) -> None:
        rng = random.Random(number)
        turn = number
        while not stop.is_set():
            sent = time.monotonic()
            status, request_id, retry_after = None, None, None
            for attempt in range(2):  # the next replica, then the other one when it cannot be reached
                replica = replicas[(turn + attempt) % 2]
                try:
                    reply = httpx.post(replica.url + "/v1/chat/completions", timeout=120, json={
                        "model": MODEL_ID, "max_tokens": args.max_tokens, "user": f"user-{number}",
                        "messages": [{"role": "user", "content": rng.choice(QUESTIONS)}]})
                except httpx.TransportError:
                    status = "unreachable"
                    continue
                status, retry_after = reply.status_code, reply.headers.get("retry-after")
                request_id = reply.json().get("id") if status == 200 else None
                break
            turn += 1
            latency = time.monotonic() - sent
            feedback = None
            if request_id:
                first = rng.randrange(2)
                for attempt in range(2):
                    try:
                        feedback = httpx.post(replicas[(first + attempt) % 2].url + "/v1/feedback", timeout=60,
                                              json={"id": request_id, "rating": rng.choice(["up", "down"])}
                                              ).status_code
                        break
                    except httpx.TransportError:
                        feedback = "unreachable"
            with lock:
                outcomes.append({"sent": sent, "status": status, "latency": latency, "done": time.monotonic(),
                                 "id": request_id, "feedback": feedback, "retry_after": retry_after})

    threads = [threading.Thread(target=client, args=(number,), daemon=True) for number in range(args.clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    total = args.minutes * 60
    time.sleep(0.3 * total)
    windows["replica_killed"] = [time.monotonic()]
    replicas[0].kill9()
    print("serve replicas: replica A killed (SIGKILL)", file=sys.stderr, flush=True)
    time.sleep(10)
    replicas[0].start()
    windows["replica_killed"].append(time.monotonic())
    time.sleep(max(0.0, started + 0.6 * total - time.monotonic()))
    windows["postgres_down"] = [time.monotonic()]
    postgres.stop()
    print("serve replicas: PostgreSQL stopped (immediate)", file=sys.stderr, flush=True)
    time.sleep(5)
    postgres.launch()
    windows["postgres_down"].append(time.monotonic())
    time.sleep(max(0.0, started + total - time.monotonic()))
    stop.set()
    for thread in threads:
        thread.join(180)
    for replica in replicas:
        replica.stop()

    requests, feedback = read_tables(url)
    postgres.stop()
    stored = {row["id"] for row in requests if row["status"] == 200}
    rated = {row["request_id"] for row in feedback}
    answered = [o for o in outcomes if o["status"] == 200]
    fed = [o for o in answered if o["feedback"] == 201]
    # A request is in an outage when its life (sent to its feedback's answer) overlaps the window, which closes 5 s
    # after the fault was repaired (the pool reconnecting, the restarted replica warming).
    def inside(outcome: dict) -> bool:
        return any(outcome["sent"] <= end + 5 and outcome["done"] >= start for start, end in windows.values())

    outside = [o for o in outcomes if not inside(o)]
    during = [o for o in outcomes if inside(o)]
    failed_outside = [o for o in outside if o["status"] != 200 or o["feedback"] not in (201, None)]
    latencies = [o["latency"] for o in answered]
    result = {
        "minutes": args.minutes, "clients": args.clients, "replicas": 2, "requests": len(outcomes),
        "answered": len(answered), "feedback_acknowledged": len(fed),
        "lost_requests": sum(1 for o in answered if o["id"] not in stored),
        "lost_feedback": sum(1 for o in fed if o["id"] not in rated),
        "error_rate_outside_outages": round(len(failed_outside) / max(1, len(outside)), 5),
        "errors_during_outages": {str(s): sum(1 for o in during if o["status"] == s)
                                  for s in sorted({o["status"] for o in during}, key=str) if s != 200},
        "errors_outside_outages": {str(s): sum(1 for o in failed_outside if (o["status"], o["feedback"]) == s)
                                   for s in sorted({(o["status"], o["feedback"]) for o in failed_outside}, key=str)},
        "503_with_retry_after": all(o["retry_after"] for o in during if o["status"] == 503),
        "p50_s": round(percentile(latencies, 0.5) or 0, 3), "p99_s": round(percentile(latencies, 0.99) or 0, 3),
        "load_average": os.getloadavg(),
    }
    result["met"] = (result["lost_requests"] == 0 and result["lost_feedback"] == 0
                     and result["error_rate_outside_outages"] == 0)
    (work / "outcomes.jsonl").write_text("".join(json.dumps(o) + "\n" for o in outcomes))
    result["windows"] = {name: [round(start - started, 1), round(end - started, 1)]
                         for name, (start, end) in windows.items()}
    line = json.dumps(result)
    print(line)
    if args.json:
        args.json.write_text(line + "\n")


if __name__ == "__main__":
    main()
