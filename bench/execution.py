"""From POST /api/v1/proposals of an auto-approved proposal to the webhook at the receiver.

Starts the web server (uvicorn), a Celery worker with 2 processes on the Redis broker, and a
receiver on loopback that verifies every signature with the `standardwebhooks` package. A rule
(`confidence >= 0.9 && payload.amount <= 50`) approves every proposal at submission. Then:

- latency, closed loop: N times, POST a proposal and wait for its webhook; p50/p95 of
  POST start → webhook and of POST response → webhook;
- throughput: N proposals POSTed while the worker's consumer is paused, then drained;
  executions per second from the first webhook to the last;
- the floor, in the same run and the same worker: a Celery task that POSTs the same signed body
  (broker + worker + HTTP, no database), sequentially for latency and queued for throughput.

    .venv/bin/python bench/execution.py [--count 500] [--database gh_exec] [--redis-db 3]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import PYTHON, REFUND_CONFIG, ROOT, bench_env, fresh_database, manage, wait_for

WEB_PORT, RECEIVER_PORT = 18280, 18281


def body(i: int) -> dict[str, Any]:
    return {
        "action_type": "refund.issue",
        "payload": {"order_id": f"ORD-{i:06d}", "amount": 42.5, "currency": "EUR"},
        "confidence": 0.93,
        "summary": f"Refund order ORD-{i:06d}: parcel arrived late",
        "rationale": "The carrier's tracking shows delivery nine days after the promised date.",
        "model": "gpt-4o-mini",
    }


class Arrivals:
    """Receiver state: when each webhook arrived, keyed by proposal id (or floor id)."""

    def __init__(self, secret: str) -> None:
        from standardwebhooks import Webhook

        self.webhook = Webhook(secret)
        self.at: dict[str, float] = {}
        self.bad = 0
        self.cond = threading.Condition()

    def wait(self, key: str, timeout: float = 30) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: key in self.at, timeout=timeout):
                raise SystemExit(f"no webhook for {key} within {timeout}s")
            return self.at[key]

    def wait_count(self, keys: set[str], timeout: float = 120) -> float:
        with self.cond:
            if not self.cond.wait_for(lambda: keys <= self.at.keys(), timeout=timeout):
                raise SystemExit(f"{len(keys - self.at.keys())} webhooks missing after {timeout}s")
            return max(self.at[k] for k in keys)


def receiver(arrivals: Arrivals) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            now = time.perf_counter()
            raw = self.rfile.read(int(self.headers["content-length"]))
            try:
                data = arrivals.webhook.verify(raw, {k.lower(): v for k, v in self.headers.items()})
            except Exception:
                arrivals.bad += 1
                self.send_response(401)
                self.end_headers()
                return
            key = data["data"].get("proposal_id") or data["data"]["floor_id"]
            with arrivals.cond:
                arrivals.at.setdefault(key, now)
                arrivals.cond.notify_all()
            self.send_response(204)
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", RECEIVER_PORT), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    handle = log.open("wb")
    return subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def summary(name: str, ms: list[float]) -> str:
    return f"{name:44} p50 {pct(ms, 50):7.1f} ms   p95 {pct(ms, 95):7.1f} ms   n={len(ms)}"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--database", default="gh_exec")
    parser.add_argument("--redis-db", type=int, default=3)
    args = parser.parse_args()

    fresh_database(args.database)
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    env = bench_env(args.database, REDIS_URL=redis_url, DB_POOL_MAX="8")
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "apply", "-", stdin=REFUND_CONFIG.format(port=RECEIVER_PORT))
    service = json.loads(
        manage(env, "create_service", "bench", "--action-types", "refund.issue", "--json")
    )
    os.environ.update(env)
    os.environ["DJANGO_SETTINGS_MODULE"] = "config.settings"
    import django

    django.setup()
    import httpx
    import redis

    from approvals.models import Proposal
    from config.celery import app
    from foundation import webhooks

    redis.Redis.from_url(redis_url).delete("celery")

    arrivals = Arrivals(service["webhook_secret"])
    server = receiver(arrivals)
    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    web = start(
        [PYTHON, "-m", "uvicorn", "config.asgi:application", "--host", "127.0.0.1",
         "--port", str(WEB_PORT), "--no-access-log", "--log-level", "warning"],
        env, logs / "gh-bench-web.log",
    )  # fmt: skip
    worker = start(
        [PYTHON, "-m", "celery", "-A", "config", "worker", "--concurrency", "2",
         "--pool", "prefork", "--without-gossip", "--without-mingle", "--without-heartbeat",
         "--include", "bench.execution_floor", "--loglevel", os.environ.get("BENCH_WORKER_LOG", "WARNING")],
        env, logs / "gh-bench-worker.log",
    )  # fmt: skip
    client = httpx.Client(
        base_url=f"http://127.0.0.1:{WEB_PORT}",
        headers={"Authorization": f"Bearer {service['api_key']}"},
    )
    try:
        wait_for(f"http://127.0.0.1:{WEB_PORT}/healthz")
        time.sleep(3)  # the worker's pool

        def submit(i: int) -> str:
            response = client.post("/api/v1/proposals", json=body(i))
            assert response.status_code == 201, response.text
            assert response.json()["state"] == "approved", response.text
            return str(response.json()["id"])

        def floor_send(key: str) -> float:
            payload = webhooks.encode({"type": "bench.floor", "data": {"floor_id": key}})
            headers = webhooks.signed_headers(
                secrets=[service["webhook_secret"]], msg_id=key, body=payload
            )
            sent = time.perf_counter()
            app.send_task(
                "bench.floor_post",
                args=[f"http://127.0.0.1:{RECEIVER_PORT}/floor", payload.decode(), headers],
            )
            return sent

        # Warm up both paths (connections, imports, caches).
        for i in range(20):
            arrivals.wait(submit(-i - 1))
            arrivals.wait(f"warm-{i}") if floor_send(f"warm-{i}") else None

        # Latency, closed loop.
        floor_ms = []
        for i in range(args.count):
            sent = floor_send(f"floor-{i}")
            floor_ms.append((arrivals.wait(f"floor-{i}") - sent) * 1000)
        post_ms, answered_ms = [], []
        for i in range(args.count):
            t0 = time.perf_counter()
            pk = submit(i)
            answered = time.perf_counter()
            arrived = arrivals.wait(pk)
            post_ms.append((arrived - t0) * 1000)
            answered_ms.append((arrived - answered) * 1000)

        # Throughput: with the worker's consumer paused, POST N proposals (their executions
        # queue up in Redis), resume it, and time the drain from the first to the last webhook.
        # The floor drains N queued floor tasks the same way.
        def drain_rate(enqueue: Any, keys: list[str]) -> float:
            app.control.cancel_consumer("celery", reply=True, timeout=5)
            enqueue()
            app.control.add_consumer("celery", reply=True, timeout=5)
            last = arrivals.wait_count(set(keys))
            first = min(arrivals.at[k] for k in keys)
            return (len(keys) - 1) / (last - first)

        queued: list[str] = []
        exec_rate = drain_rate(
            lambda: queued.extend(submit(100_000 + i) for i in range(args.count)), queued
        )
        keys = [f"burst-{i}" for i in range(args.count)]
        floor_rate = drain_rate(lambda: [floor_send(k) for k in keys], keys)

        executed = Proposal.objects.filter(state="executed").count()
        print(f"execution benchmark: {args.count} proposals, worker --concurrency 2, Redis broker")
        print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        print(summary("POST start → webhook", post_ms))
        print(summary("POST response → webhook", answered_ms))
        print(summary("floor: Celery task → same signed POST", floor_ms))
        print(
            f"{'ratio p50 (POST response → webhook / floor)':44} "
            f"{statistics.median(answered_ms) / statistics.median(floor_ms):.2f}"
        )
        print(f"{'executions/s (draining a queue)':44} {exec_rate:7.1f}")
        print(f"{'floor tasks/s (draining a queue)':44} {floor_rate:7.1f}")
        print(f"{'ratio throughput (executions / floor)':44} {exec_rate / floor_rate:.2f}")
        print(f"{'proposals executed / signatures refused':44} {executed} / {arrivals.bad}")
        target = "met" if statistics.median(post_ms) <= 100 else "NOT met"
        print(f"target p50 ≤ 100 ms (POST start → webhook): {target}")
    finally:
        client.close()
        stop(worker)
        stop(web)
        server.shutdown()


if __name__ == "__main__":
    main()
