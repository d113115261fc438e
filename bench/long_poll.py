"""Many clients waiting on `GET /api/v1/proposals/{id}?wait=` through the documented proxy.

The Procfile's `web` (granian WSGI, 2 workers x 8 threads) and `live` (uvicorn, 1 worker) behind
deploy/nginx.conf (Debian's nginx, rendered as tests/stack.py does) on a fresh PostgreSQL
database. Two rounds:

1. Time runs out: N clients (default 500) each wait up to `--wait` seconds on a pending
   proposal nobody decides; while they wait, a plain read and the submit go through the same
   proxy to `web`. Printed: the read's and the submit's latency before and during the waits,
   how many waiters came back 200 and when (against `--wait`), and the CPU the `live` process
   spent per second of waiting.
2. A reviewer decides: N clients wait (up to 30 s) on another pending proposal; this process
   approves it (services.proposal_decide, as the proposal page does); printed: the time from
   the decision's commit to each waiter's answer, and how many were answered "approved".

Waiters wake from the decision's Redis event (approvals/waits.py); none re-reads on its own.

    .venv/bin/python bench/long_poll.py [--waiters 500] [--wait 15] [--database gh_live_bench]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api_submit import BODY, CONFIG
from common import bench_env, fresh_database, manage, production_stack


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its children so far (the server's workers)."""
    total = 0.0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                fields = handle.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(entry.name) == pid or int(fields[1]) == pid:  # itself or a direct child
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def timed(client: httpx.Client, method: str, url: str, **kwargs: object) -> float:
    started = time.perf_counter()
    response = client.request(method, url, **kwargs)  # type: ignore[arg-type]
    assert response.status_code in (200, 201), (url, response.status_code, response.text[:300])
    return (time.perf_counter() - started) * 1000


def latencies(base: str, key: str, proposal: str, count: int) -> dict[str, float]:
    auth = {"Authorization": f"Bearer {key}"}
    with httpx.Client(headers=auth, timeout=30) as client:
        reads = [timed(client, "GET", f"{base}/api/v1/proposals/{proposal}") for _ in range(count)]
        submits = [
            timed(client, "POST", f"{base}/api/v1/proposals", json=BODY) for _ in range(count)
        ]
    return {
        "read p50": statistics.median(reads),
        "read p95": statistics.quantiles(reads, n=20)[-1],
        "submit p50": statistics.median(submits),
        "submit p95": statistics.quantiles(submits, n=20)[-1],
    }


async def wait_all(
    base: str, key: str, proposal: str, waiters: int, wait: float
) -> list[tuple[float, float, str]]:
    """Each waiter's (start, end) on the perf_counter clock and the state it was answered
    ("" when not 200). A raw HTTP/1.1 client on asyncio streams: httpx costs a few ms of CPU
    per response, and 500 of them answered at once measured the client, not the server."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    request = (
        f"GET /api/v1/proposals/{proposal}?wait={wait} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: Bearer {key}\r\nConnection: close\r\n\r\n"
    ).encode()

    async def one() -> tuple[float, float, str]:
        started = time.perf_counter()
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), wait + 60)
        length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
        body = await reader.readexactly(length)
        ended = time.perf_counter()
        writer.close()
        state = json.loads(body)["state"] if head.startswith(b"HTTP/1.1 200") else ""
        return started, ended, state

    return await asyncio.gather(*(one() for _ in range(waiters)))


def in_background(
    base: str, key: str, proposal: str, waiters: int, wait: float
) -> tuple[threading.Thread, list[list[tuple[float, float, str]]]]:
    done: list[list[tuple[float, float, str]]] = []

    def run() -> None:
        done.append(asyncio.run(wait_all(base, key, proposal, waiters, wait)))

    thread = threading.Thread(target=run)
    thread.start()
    return thread, done


def decide(proposal_id: str) -> float:
    """Approve as a reviewer does from the proposal page; the commit's perf_counter time."""
    from django.contrib.auth.models import User
    from django.db import transaction

    from approvals import services
    from approvals.models import Proposal

    reviewer = User.objects.get(username="bench-reviewer")
    committed: list[float] = []
    with transaction.atomic():
        services.claim_acquire(proposal_id=uuid.UUID(proposal_id), reviewer=reviewer)
    with transaction.atomic():
        transaction.on_commit(lambda: committed.append(time.perf_counter()))
        services.proposal_decide(
            proposal=Proposal.objects.get(pk=proposal_id), reviewer=reviewer, verdict="approve"
        )
    return committed[0]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def load() -> str:
    return "load " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--waiters", type=int, default=500)
    parser.add_argument("--wait", type=float, default=15)
    parser.add_argument("--samples", type=int, default=40, help="reads and submits measured")
    parser.add_argument("--database", default="gh_live_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/6")
    args = parser.parse_args()

    fresh_database(args.database)
    env = bench_env(args.database, DB_POOL_MAX="16", REDIS_URL=args.redis_url)
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "apply", "-", stdin=CONFIG)
    key = json.loads(
        manage(env, "create_service", "bench", "--action-types", "refund.issue", "--json")
    )["api_key"]
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()
    from django.contrib.auth.models import User

    User.objects.create_superuser("bench-reviewer", password="bench-password-123")
    print(f"load before: {load()}")
    with production_stack(env) as (base, _, live, proxy):

        def create() -> str:
            created = httpx.post(
                f"{base}/api/v1/proposals",
                json=BODY,
                headers={"Authorization": f"Bearer {key}"},
            )
            assert created.status_code == 201, created.text
            return str(created.json()["id"])

        proposal, decided = create(), create()
        before = latencies(base, key, proposal, args.samples)
        live_pid = live_server_pid(live)

        # Round 1: nobody decides; time runs out.
        round_cpu = cpu_seconds(live_pid)
        thread, done = in_background(base, key, proposal, args.waiters, args.wait)
        time.sleep(min(3.0, args.wait / 3))  # all connected and waiting
        cpu_start, clock_start = cpu_seconds(live_pid), time.monotonic()
        during = latencies(base, key, proposal, args.samples)
        live_cpu = (cpu_seconds(live_pid) - cpu_start) / (time.monotonic() - clock_start)
        load_during = load()
        thread.join(timeout=args.wait + 60)
        # Everything the live process spent on the round (connect, wait, answer) per waiter,
        # less the reads and submits of `during`, which went to web.
        timeout_cpu = (cpu_seconds(live_pid) - round_cpu) / args.waiters

        # Round 2: a reviewer decides while they wait.
        round_cpu = cpu_seconds(live_pid)
        thread, decided_done = in_background(base, key, decided, args.waiters, 30)
        time.sleep(5)
        cpu_start, clock_start = cpu_seconds(live_pid), time.monotonic()
        time.sleep(2)
        idle_cpu = (cpu_seconds(live_pid) - cpu_start) / (time.monotonic() - clock_start)
        committed = decide(decided)
        thread.join(timeout=60)
        decided_cpu = (cpu_seconds(live_pid) - round_cpu) / args.waiters
        load_decided = load()
        errors = proxy.log()

    print(f"{args.waiters} waiters, web granian WSGI 2x8, live uvicorn 1, behind nginx")
    print(f"Round 1: ?wait={args.wait:g}, nobody decides ({load_during})")
    for name in before:
        print(
            f"  {name:11} before {before[name]:7.1f} ms   during the waits {during[name]:7.1f} ms"
        )
    returned = done[0] if done else []
    ok = [end - start for start, end, state in returned if state]
    print(
        f"  waiters back with 200: {len(ok)} of {args.waiters}"
        + (
            f", after {min(ok):.2f} / {pct(ok, 50):.2f} / {max(ok):.2f} s (min / p50 / max)"
            if ok
            else ""
        )
    )
    print(f"  live process CPU while they wait: {live_cpu:.3f} s per second")
    print(f"  live process CPU per waiter, whole round: {timeout_cpu * 1000:.2f} ms")
    print(f"Round 2: ?wait=30, a reviewer approves after 7 s ({load_decided})")
    print(f"  live process CPU while they wait: {idle_cpu:.3f} s per second")
    print(f"  live process CPU per waiter, whole round: {decided_cpu * 1000:.2f} ms")
    answered = decided_done[0] if decided_done else []
    approved = [(end - committed) * 1000 for _, end, state in answered if state == "approved"]
    print(
        f"  waiters answered 'approved': {len(approved)} of {args.waiters}"
        + (
            f"; decision commit -> answer p50 {pct(approved, 50):.0f} ms, "
            f"p95 {pct(approved, 95):.0f} ms, max {max(approved):.0f} ms"
            if approved
            else ""
        )
    )
    print(f"load after: {load()}")
    if errors.strip():
        print("nginx said:\n" + errors[-2000:])


def live_server_pid(base: str) -> int:
    """The uvicorn process listening on `base`'s port (ours: started by serve())."""
    port = int(base.rsplit(":", 1)[1])
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                cmdline = Path(f"/proc/{entry.name}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"uvicorn" in cmdline and str(port).encode() in cmdline:
                return int(entry.name)
    raise SystemExit(f"no uvicorn on port {port}")


if __name__ == "__main__":
    main()
