"""Memory over 100,000 requests: RSS of each web and worker process, and whether it still grows.

    .venv/bin/python bench/memory.py [--requests 100000] [--every 5000] [--max-seconds 900]

The production processes on a fresh PostgreSQL database and Redis: the Procfile's `web:`
(granian WSGI, 2 workers x 8 threads) and a Celery worker (prefork, 2 processes) executing the
approved proposals by webhook to a receiver on loopback. wrk (`--connections` keep-alive
connections, 2 threads, a Lua script) sends a mix: 40% submits (half of them approved by a rule
and executed by the worker, half left pending), 45% API reads (one proposal, a page of the
list), 15% reviewer pages (the queue, the history, a proposal's page, signed in); a warm-up of
200 requests from Python first checks every kind answers 2xx and collects proposals to read.
wrk runs in stretches of about `--every` requests (timed from the rate so far); after each it
prints the RSS of every process of both, and at the end the slope of each process's RSS over
the last half of the run (least squares, MB per 10,000 requests) and the verdict: no growth
when the fitted growth over that half is within 2 MB or 2% of the process's RSS, whichever is
larger. `--max-seconds` bounds the run; wrk's failures (non-2xx, socket errors) are counted.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import PYTHON, REFUND_CONFIG, ROOT, SESSIONS, bench_env, fresh_database, manage, serve


def receiver() -> ThreadingHTTPServer:
    """Answers every webhook 204 (the executions' other end)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("content-length") or 0))
            self.send_response(204)
            self.send_header("content-length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def rss_mb(pid: int) -> float:
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def processes(session: int) -> list[int]:
    """The pids of one process group (a server and its workers), oldest first."""
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
                if int(stat[stat.rindex(b")") + 2 :].split()[3]) == session:
                    found.append(int(entry.name))
    return sorted(found)


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares MB per request."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / var if var else 0.0


class Load:
    """Client threads sending the mix; counts requests and failures."""

    def __init__(self, port: int, key: str, session: str, ids: list[str]) -> None:
        self.port, self.key, self.session = port, key, session
        self.ids = ids
        self.sent = 0
        self.failed: dict[str, int] = {}
        self.lock = threading.Lock()

    def one(self, conn: http.client.HTTPConnection, rng: random.Random) -> None:
        api = {"Authorization": f"Bearer {self.key}"}
        page = {"Cookie": f"sessionid={self.session}", "Accept": "text/html"}
        draw = rng.random() if self.ids else 0.0  # the first request submits
        if draw < 0.4:
            amount = 42.5 if rng.random() < 0.5 else 420.0  # approved and executed, or pending
            body = {
                "action_type": "refund.issue",
                "payload": {"order_id": f"ORD-{rng.randrange(10**6)}", "amount": amount,
                            "currency": "EUR"},
                "confidence": 0.95,
                "summary": "Refund a late parcel",
                "rationale": "The carrier's tracking shows a late delivery. " * 4,
                "external_id": str(uuid.uuid4()),
            }  # fmt: skip
            kind, method, path = "submit", "POST", "/api/v1/proposals"
            data: bytes | None = json.dumps(body).encode()
            headers = {**api, "Content-Type": "application/json"}
        elif draw < 0.6:
            kind, method, path, data, headers = "read", "GET", "", None, api
            path = f"/api/v1/proposals/{rng.choice(self.ids)}"
        elif draw < 0.85:
            kind, method, data, headers = "list", "GET", None, api
            path = "/api/v1/proposals?limit=20"
        else:
            pages = ["/", "/history/", f"/proposals/{rng.choice(self.ids)}/"]
            kind, method, path, data, headers = "page", "GET", rng.choice(pages), None, page
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        payload = response.read()
        if response.status >= 300:
            with self.lock:
                self.failed[f"{kind} {response.status}"] = (
                    self.failed.get(f"{kind} {response.status}", 0) + 1
                )
        elif kind == "submit" and len(self.ids) < 5000:
            self.ids.append(json.loads(payload)["id"])

    def run(self, until: int, deadline: float, seed: int) -> None:
        rng = random.Random(seed)
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        while time.monotonic() < deadline:
            with self.lock:
                if self.sent >= until:
                    break
                self.sent += 1
            try:
                self.one(conn, rng)
            except (OSError, http.client.HTTPException):
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
                with self.lock:
                    self.failed["socket"] = self.failed.get("socket", 0) + 1


MIX_SCRIPT = """
local threads = {}
local tid = 0
local counter = 0
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  math.randomseed(tid * 7919 + os.time())
end
local api = {["Authorization"] = AUTH}
local json = {["Authorization"] = AUTH, ["Content-Type"] = "application/json"}
local page = {["Cookie"] = COOKIE, ["Accept"] = "text/html"}
local pages = {"/", "/history/"}
request = function()
  counter = counter + 1
  local draw = math.random()
  if draw < 0.4 then
    local amount = "420.0"
    if math.random() < 0.5 then amount = "42.5" end  -- approved and executed, or pending
    local body = string.format(
      '{"action_type":"refund.issue","payload":{"order_id":"ORD-%d","amount":%s,'
      .. '"currency":"EUR"},"confidence":0.95,"summary":"Refund a late parcel",'
      .. '"rationale":"%s","external_id":"%s-%d-%d"}',
      math.random(1000000), amount, RATIONALE, RUN, tid, counter)
    return wrk.format("POST", "/api/v1/proposals", json, body)
  elseif draw < 0.6 then
    return wrk.format("GET", "/api/v1/proposals/" .. IDS[math.random(#IDS)], api)
  elseif draw < 0.85 then
    return wrk.format("GET", "/api/v1/proposals?limit=20", api)
  end
  local path = "/proposals/" .. IDS[math.random(#IDS)] .. "/"
  if math.random() < 2 / 3 then path = pages[math.random(2)] end
  return wrk.format("GET", path, page)
end
done = function(summary, latency, requests)
  io.write(string.format(
    "WRKJSON {\\"requests\\":%d,\\"failed\\":%d}\\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout))
end
"""


def wrk_mix(
    port: int, key: str, session: str, ids: list[str], seconds: float, connections: int
) -> tuple[int, int]:
    """The mix for `seconds` through wrk; (requests, failed)."""
    script = (
        f"AUTH = 'Bearer {key}'\nCOOKIE = 'sessionid={session}'\nRUN = '{time.time_ns()}'\n"
        f"RATIONALE = '{'The carrier tracking shows a late delivery. ' * 4}'\n"
        f"IDS = {{{', '.join(repr(i) for i in ids)}}}\n" + MIX_SCRIPT
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        result = subprocess.run(
            ["wrk", "-t", "2", "-c", str(connections), "-d", f"{max(1, round(seconds))}s",
             "--timeout", "30s", "-s", handle.name, f"http://127.0.0.1:{port}"],
            capture_output=True, text=True, check=True, timeout=seconds + 60,
        )  # fmt: skip
    finally:
        os.unlink(handle.name)
    match = re.search(r"WRKJSON (\{.*\})", result.stdout)
    if not match:
        raise SystemExit(f"could not read wrk's output:\n{result.stdout}\n{result.stderr}")
    counts = json.loads(match.group(1))
    return int(counts["requests"]), int(counts["failed"])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--every", type=int, default=5_000)
    parser.add_argument("--connections", type=int, default=16, help="wrk's keep-alive connections")
    parser.add_argument("--max-seconds", type=float, default=900)
    parser.add_argument("--database", default="gh_perf_memory")
    parser.add_argument("--redis-db", type=int, default=8)
    args = parser.parse_args()

    fresh_database(args.database)
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    env = bench_env(args.database, REDIS_URL=redis_url, DB_POOL_MAX="8")
    sink = receiver()
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "collectstatic", "--noinput", "-v", "0")  # the pages' manifest (DEBUG off)
    manage(env, "apply", "-", stdin=REFUND_CONFIG.format(port=sink.server_address[1]))
    key = json.loads(
        manage(env, "create_service", "bench", "--action-types", "refund.issue", "--json")
    )["api_key"]
    manage(env, "create_reviewer", "rita", "--action-types", "refund.issue")
    os.environ.update(env, DJANGO_SETTINGS_MODULE="config.settings")
    import django

    django.setup()
    import redis
    from django.contrib.auth.models import User
    from django.test import Client

    redis.Redis.from_url(redis_url).delete("celery")
    client = Client()
    client.force_login(User.objects.get(username="rita"))
    session = client.cookies["sessionid"].value

    logs = Path(os.environ.get("TMPDIR", "/tmp"))
    with contextlib.ExitStack() as stack:
        web_log = stack.enter_context((logs / "gh-memory-web.log").open("wb"))
        base = stack.enter_context(serve(env, server="granian-wsgi", output=web_log))
        worker = subprocess.Popen(
            [PYTHON, "-m", "celery", "-A", "config", "worker", "--concurrency", "2",
             "--pool", "prefork", "--without-gossip", "--without-mingle", "--loglevel", "WARNING"],
            cwd=ROOT, env=env, stdout=stack.enter_context((logs / "gh-memory-worker.log").open("wb")),
            stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip

        def stop_worker() -> None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=30)

        stack.callback(stop_worker)
        time.sleep(3)
        port = int(base.rsplit(":", 1)[1])
        load = Load(port, key, session, [])
        # A few proposals to read, then warm up (imports, caches, pools) before the first sample.
        load.run(until=200, deadline=time.monotonic() + 120, seed=0)
        if not load.ids or load.failed:
            raise SystemExit(f"the warm-up failed: {load.failed}, {len(load.ids)} submits")
        load.sent, load.failed = 0, {}
        groups = {"web": SESSIONS[base], "worker": worker.pid}
        history: dict[tuple[str, int], list[tuple[int, float]]] = {}
        started = time.monotonic()
        deadline = started + args.max_seconds
        print(f"load before: {os.getloadavg()}")
        print(f"{'requests':>9} {'s':>6}  RSS MB: " + "  ".join(
            f"{name}:{pid}" for name, session in groups.items() for pid in processes(session)
        ))  # fmt: skip

        def sample() -> None:
            cells = []
            for name, group in groups.items():
                for pid in processes(group):
                    mb = rss_mb(pid)
                    history.setdefault((name, pid), []).append((load.sent, mb))
                    cells.append(f"{mb:8.1f}")
            print(f"{load.sent:9d} {time.monotonic() - started:6.0f}  " + "  ".join(cells))

        sample()
        failed = 0
        rate = 100.0  # requests a second, until the first stretch measures it
        while load.sent < args.requests:
            left = deadline - time.monotonic()
            if left < 1:
                print(f"stopped at --max-seconds ({args.max_seconds:.0f} s)")
                break
            wanted = min(args.every, args.requests - load.sent)
            seconds = min(left, max(1.0, wanted / rate))
            stretch = time.monotonic()
            sent, bad = wrk_mix(port, key, session, load.ids, seconds, args.connections)
            rate = sent / (time.monotonic() - stretch)
            load.sent += sent
            failed += bad
            sample()
        elapsed = time.monotonic() - started
        from approvals.models import Proposal

        executed = Proposal.objects.filter(state="executed").count()
        pending = Proposal.objects.filter(state="pending_review").count()

    half = load.sent / 2
    print(
        f"\n{load.sent} requests in {elapsed:.0f} s ({load.sent / elapsed:.0f}/s), load after: "
        f"{os.getloadavg()}; proposals executed {executed}, pending {pending}; "
        f"failed (non-2xx or socket errors): {failed}"
    )
    print(f"RSS over the last {load.sent - half:.0f} requests (least squares):")
    print(f"verdict: {verdict(history, load.sent, args.requests)}")


def verdict(history: dict[tuple[str, int], list[tuple[int, float]]], sent: int, wanted: int) -> str:
    """Each process's fitted growth over the second half of the run, printed, and the verdict:
    established only when the run reached `wanted` requests and every process has at least
    three samples in that half."""
    half = sent / 2
    verdicts: list[bool | None] = []
    for (name, pid), points in history.items():
        tail = [(x, y) for x, y in points if x >= half]
        if len(tail) < 3:
            print(f"  {name} pid {pid}: {len(tail)} samples in the second half, too few to fit")
            verdicts.append(None)
            continue
        per_10k = slope(tail) * 10_000
        growth = slope(tail) * (tail[-1][0] - tail[0][0])
        allowed = max(2.0, 0.02 * tail[-1][1])
        flat = growth <= allowed
        verdicts.append(flat)
        print(
            f"  {name} pid {pid}: {tail[0][1]:.1f} → {tail[-1][1]:.1f} MB, slope "
            f"{per_10k:+.2f} MB per 10,000 requests, fitted growth {growth:+.1f} MB "
            f"(allowed {allowed:.1f}): {'no growth' if flat else 'GROWS'}"
        )
    if False in verdicts:
        return "GROWTH FOUND"
    if sent < wanted or None in verdicts or not verdicts:
        return f"NOT ESTABLISHED (reached {sent} of {wanted} requests; no growth seen so far)"
    return f"no growth in any process over the last {sent - half:.0f} of {sent} requests"


if __name__ == "__main__":
    main()
