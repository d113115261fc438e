"""Many clients waiting on `GET /api/v1/proposals/{id}?wait=` through the documented proxy.

The Procfile's `web` (granian WSGI, 2 workers x 8 threads) and `live` (uvicorn, 1 worker) behind
deploy/nginx.conf (Debian's nginx, rendered as tests/stack.py does) on a fresh PostgreSQL
database. N clients (default 500) each wait up to `--wait` seconds on a pending proposal; while
they wait, a plain read and the submit go through the same proxy to `web`. Printed: the read's
and the submit's latency before and during the waits, how many waiters came back 200 and when,
and the CPU the `live` process spent per second of waiting (each waiter re-reads its proposal
with a backoff up to every 0.5 s), with the load average.

    .venv/bin/python bench/long_poll.py [--waiters 500] [--wait 15] [--database gh_perf_bench]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from api_submit import BODY, CONFIG
from common import bench_env, free_port, fresh_database, manage, serve, wait_for

from tests.stack import nginx


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


async def wait_all(base: str, key: str, proposal: str, waiters: int, wait: float) -> list[float]:
    limits = httpx.Limits(max_connections=waiters + 10, max_keepalive_connections=waiters + 10)
    url = f"{base}/api/v1/proposals/{proposal}?wait={wait}"
    async with httpx.AsyncClient(
        headers={"Authorization": f"Bearer {key}"}, limits=limits, timeout=wait + 30
    ) as client:

        async def one() -> float:
            started = time.perf_counter()
            response = await client.get(url)
            return time.perf_counter() - started if response.status_code == 200 else -1.0

        return await asyncio.gather(*(one() for _ in range(waiters)))


def load() -> str:
    return "load " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--waiters", type=int, default=500)
    parser.add_argument("--wait", type=float, default=15)
    parser.add_argument("--samples", type=int, default=40, help="reads and submits measured")
    parser.add_argument("--database", default="gatehouse_bench")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    args = parser.parse_args()

    fresh_database(args.database)
    env = bench_env(args.database, DB_POOL_MAX="16", REDIS_URL=args.redis_url)
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "apply", "-", stdin=CONFIG)
    key = json.loads(
        manage(env, "create_service", "bench", "--action-types", "refund.issue", "--json")
    )["api_key"]
    print(f"load before: {load()}")
    with (
        serve(env, server="granian-wsgi") as web,
        serve(env, server="uvicorn", workers=1) as live,
        tempfile.TemporaryDirectory() as tmp,
    ):
        port = int(os.environ.get("BENCH_PROXY_PORT") or 0) or free_port()
        proxy = nginx(
            port=port,
            web_port=int(web.rsplit(":", 1)[1]),
            live_port=int(live.rsplit(":", 1)[1]),
            logdir=Path(tmp),
        ).start()
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(base + "/healthz")
            created = httpx.post(
                f"{base}/api/v1/proposals", json=BODY, headers={"Authorization": f"Bearer {key}"}
            )
            assert created.status_code == 201, created.text
            proposal = created.json()["id"]
            before = latencies(base, key, proposal, args.samples)
            live_pid = live_server_pid(live)
            done: list[list[float]] = []

            def run_waiters() -> None:
                done.append(asyncio.run(wait_all(base, key, proposal, args.waiters, args.wait)))

            thread = threading.Thread(target=run_waiters)
            thread.start()
            time.sleep(min(3.0, args.wait / 3))  # all connected and waiting
            cpu_start, clock_start = cpu_seconds(live_pid), time.monotonic()
            during = latencies(base, key, proposal, args.samples)
            live_cpu = (cpu_seconds(live_pid) - cpu_start) / (time.monotonic() - clock_start)
            load_during = load()
            thread.join(timeout=args.wait + 60)
            errors = proxy.log()
        finally:
            proxy.stop()
    returned = done[0] if done else []
    ok = [seconds for seconds in returned if seconds >= 0]
    print(f"{args.waiters} waiters, ?wait={args.wait:g}, web granian WSGI 2x8, live uvicorn 1")
    for name in before:
        print(
            f"  {name:11} before {before[name]:7.1f} ms   during the waits {during[name]:7.1f} ms"
        )
    print(
        f"  waiters back with 200: {len(ok)} of {args.waiters}"
        + (f", after {min(ok):.1f}-{max(ok):.1f} s" if ok else "")
    )
    print(f"  live process CPU while they wait: {live_cpu:.2f} s per second ({load_during})")
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
