"""Shared plumbing for the benchmarks: a fresh PostgreSQL database, the app servers,
and wrk. Each benchmark runs alone: `.venv/bin/python bench/<name>.py`."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
ADMIN_URL = os.environ.get(
    "BENCH_ADMIN_DATABASE_URL", "postgres://postgres@127.0.0.1:5432/postgres"
)


def bench_env(database: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env.update(
        DEBUG="0",
        SECRET_KEY="bench-secret-key-" + "x" * 40,
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_URL=f"postgres://postgres@127.0.0.1:5432/{database}",
        GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS="1",
        LOG_LEVEL="WARNING",
    )
    env.update(extra)
    return env


def manage(env: dict[str, str], *args: str, stdin: str | None = None) -> str:
    result = subprocess.run(
        [PYTHON, "manage.py", *args],
        cwd=ROOT,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    if result.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def fresh_database(name: str) -> None:
    import psycopg

    with psycopg.connect(
        ADMIN_URL.replace("postgres://", "postgresql://"), autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')


def free_port() -> int:
    """A free loopback port: the first free one of BENCH_PORT_RANGE ("25300-25399", for a
    machine whose benchmarks share out port ranges), else one the kernel picks."""
    span = os.environ.get("BENCH_PORT_RANGE")
    if span:
        low, high = (int(n) for n in span.split("-"))
        for port in range(low, high + 1):
            with socket.socket() as sock:
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    continue
                if port not in _PORTS_GIVEN:
                    _PORTS_GIVEN.add(port)
                    return port
        raise SystemExit(f"no free port in BENCH_PORT_RANGE {span}")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# Ports of BENCH_PORT_RANGE handed out: a server started on one may not be listening yet.
_PORTS_GIVEN: set[int] = set()


def wait_for(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server at {url} did not come up within {timeout} s")


# The process group (= session) id of each server serve() started, by base URL: its CPU is that
# session's processes' (cpu_seconds_by_pid(sessions=…)), whatever else runs on the machine.
SESSIONS: dict[str, int] = {}

# The HTTP servers a benchmark can put in front of a WSGI/ASGI application, as argv templates:
# {app} is "module:attribute", {port}, {workers} and {threads} are filled in.
SERVERS: dict[str, list[str]] = {
    # The Procfile's `web:` (WSGI on worker threads).
    "granian-wsgi": shlex.split(
        "-m granian --interface wsgi {app} --host 127.0.0.1 --port {port} --workers {workers} "
        "--blocking-threads {threads} --no-ws --log-level warning"
    ),
    "gunicorn": shlex.split(
        "-m gunicorn {app} --bind 127.0.0.1:{port} --workers {workers} --threads {threads} "
        "--worker-class gthread --log-level warning"
    ),
    # The Procfile's `live:` (ASGI; before issue 16 it served everything).
    # granian's ASGI interface (websockets included; it negotiates no compression).
    "granian-asgi": shlex.split(
        "-m granian --interface asgi {app} --host 127.0.0.1 --port {port} --workers {workers} "
        "--log-level warning"
    ),
    "uvicorn": shlex.split(
        "-m uvicorn {app} --host 127.0.0.1 --port {port} --workers {workers} --no-access-log "
        "--log-level warning"
    ),
}
WSGI_SERVERS = {"granian-wsgi", "gunicorn"}


@contextlib.contextmanager
def serve(
    env: dict[str, str],
    *,
    server: str = "uvicorn",
    project: str = "config",
    workers: int = 2,
    threads: int = 8,
    cwd: Path = ROOT,
    ready: str = "/healthz",
    output: Any = None,
    port: int = 0,
    ready_timeout: float = 90,
    extra: list[str] | None = None,
    python_args: list[str] | None = None,
) -> Iterator[str]:
    """`server` running `project`'s WSGI or ASGI entry (Gatehouse's by default) on `port`, else
    BENCH_PORT, else a free loopback port; yields its base URL and stops it afterwards.
    `output`: a file for its stdout and stderr (the logs), else the terminal."""
    port = port or int(os.environ.get("BENCH_PORT") or 0) or free_port()
    entry = "wsgi" if server in WSGI_SERVERS else "asgi"
    app = f"{project}.{entry}:application"
    values = {"app": app, "port": port, "workers": workers, "threads": threads}
    argv = [PYTHON, *(python_args or []), *(part.format(**values) for part in SERVERS[server])]
    argv += extra or []
    # As the Procfile's WEB_THREADS: config/wsgi.py opens a pooled connection for each thread.
    env = {**env, "WEB_THREADS": str(threads)}
    process = subprocess.Popen(
        argv, cwd=cwd, env=env, stdout=output, stderr=output, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    SESSIONS[base] = process.pid  # its own session: the server's processes are that session's
    try:
        wait_for(base + ready, timeout=ready_timeout)
        yield base
    finally:
        stop_session(process)


def stop_session(process: subprocess.Popen[Any]) -> None:
    """SIGTERM the session `process` leads (a server and its workers), SIGKILL after 15 s."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)


def live_args() -> str:
    """The `live` server's options beyond SERVERS': as the Procfile's `live:` unless
    BENCH_LIVE_ARGS says otherwise ("" for uvicorn's defaults)."""
    return os.environ.get("BENCH_LIVE_ARGS", "--ws-per-message-deflate false")


@contextlib.contextmanager
def production_stack(env: dict[str, str]) -> Iterator[tuple[str, str, str, Any]]:
    """The Procfile's `web` (granian WSGI, 2 workers x 8 threads) and `live` (uvicorn, 1 worker;
    BENCH_LIVE_SERVER, BENCH_LIVE_WORKERS, live_args() and BENCH_LIVE_PYTHON_ARGS vary it)
    behind deploy/nginx.conf (Debian's nginx, as tests/stack.py runs it); yields the proxy's
    base URL, web's, live's and the nginx process (its log), and stops them all afterwards."""
    from tests.stack import nginx

    # BENCH_PORT would give both servers one port: each has its own variable.
    web_port = int(os.environ.get("BENCH_WEB_PORT") or 0) or free_port()
    live_port = int(os.environ.get("BENCH_LIVE_PORT") or 0) or free_port()
    with (
        serve(env, server="granian-wsgi", port=web_port) as web,
        serve(
            env,
            server=os.environ.get("BENCH_LIVE_SERVER") or "uvicorn",
            workers=int(os.environ.get("BENCH_LIVE_WORKERS") or 1),
            port=live_port,
            extra=shlex.split(live_args()),
            # e.g. a profiler's wrapper, to see where a push's time goes.
            python_args=shlex.split(os.environ.get("BENCH_LIVE_PYTHON_ARGS", "")),
        ) as live,
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
            yield base, web, live, proxy
        finally:
            proxy.stop()


def uvicorn(
    env: dict[str, str], *, workers: int = 2, output: Any = None, port: int = 0
) -> contextlib.AbstractContextManager[str]:
    """The ASGI server (the Procfile's `live:`) running Gatehouse; see serve()."""
    return serve(env, server="uvicorn", workers=workers, output=output, port=port)


WRK_SCRIPT = """
local counter = 0
local thread_id = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  thread_id = tid
end
wrk.method = "POST"
wrk.body = BODY
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = AUTH
request = function()
  if UNIQUE_KEYS then
    counter = counter + 1
    wrk.headers["Idempotency-Key"] = RUN .. "-" .. thread_id .. "-" .. counter
  end
  return wrk.format(nil, nil, nil, nil)
end
done = function(summary, latency, requests)
  io.write(string.format(
    "WRKJSON {\\"requests\\":%d,\\"duration_us\\":%d,\\"non2xx\\":%d,\\"socket_errors\\":%d,"
    .. "\\"p50_us\\":%d,\\"p99_us\\":%d}\\n",
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds_by_pid(
    *, database: str | None = None, sessions: set[int] | None = None
) -> dict[int, tuple[str, float]]:
    """CPU time (user + system) so far of each process that shares the machine during a run, by
    group: the app server, PostgreSQL, Redis, read from /proc (Linux). With `sessions`, the
    server is only the processes of those sessions (the server groups serve() started); with
    `database`, PostgreSQL only the backends of that database: other work on the machine is left
    out."""
    found: dict[int, tuple[str, float]] = {}
    marker = f" {database} ".encode() if database else b""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as handle:
                stat = handle.read()
            with open(f"/proc/{entry.name}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except OSError:
            continue  # gone meanwhile
        comm = stat[stat.index(b"(") + 1 : stat.rindex(b")")]
        fields = stat[stat.rindex(b")") + 2 :].split()
        seconds = (int(fields[11]) + int(fields[12])) / _TICK
        if comm == b"postgres" or cmdline.startswith(b"postgres:"):
            if not marker or marker in cmdline.replace(b"\0", b" "):
                found[int(entry.name)] = ("postgres", seconds)
        elif comm.startswith(b"redis-server"):
            found[int(entry.name)] = ("redis", seconds)
        elif sessions is not None:
            if int(fields[3]) in sessions:
                found[int(entry.name)] = ("server", seconds)
        elif any(name in cmdline for name in (b"uvicorn", b"granian", b"gunicorn", b"multipro")):
            found[int(entry.name)] = ("server", seconds)
    return found


def wal_counters() -> dict[str, float]:
    """The whole cluster's WAL records, full-page images and bytes so far (pg_stat_wal), and
    the checkpoints it began (pg_stat_bgwriter)."""
    import psycopg

    with psycopg.connect(ADMIN_URL.replace("postgres://", "postgresql://")) as conn:
        row = conn.execute(
            "SELECT wal_records, wal_fpi, wal_bytes, checkpoints_timed + checkpoints_req "
            "FROM pg_stat_wal, pg_stat_bgwriter"
        ).fetchone()
    assert row is not None
    return dict(
        zip(("wal_records", "wal_fpi", "wal_bytes", "checkpoints"), map(float, row), strict=True)
    )


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has been busy (every state of /proc/stat's first line
    but idle and iowait)."""
    with open("/proc/stat", "rb") as handle:
        fields = [int(value) for value in handle.readline().split()[1:8]]
    return (sum(fields) - fields[3] - fields[4]) / _TICK


def cpu_used(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per group between two snapshots, process by process (a process that exited
    meanwhile is left out rather than subtracted)."""
    totals = {"server": 0.0, "postgres": 0.0, "redis": 0.0}
    for pid, (group, seconds) in after.items():
        previous = before.get(pid)
        totals[group] += seconds - (previous[1] if previous and previous[0] == group else 0.0)
    return totals


def _lua_string(text: str) -> str:
    return "[==[" + text + "]==]"


def wrk_post(
    url: str,
    body: dict[str, Any],
    *,
    auth: str = "",
    seconds: int = 10,
    connections: int = 32,
    threads: int = 2,
    unique_keys: bool = False,
    database: str | None = None,
    sessions: set[int] | None = None,
) -> dict[str, float]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    script = (
        f"BODY = {_lua_string(json.dumps(body))}\nAUTH = {_lua_string(auth)}\n"
        f"UNIQUE_KEYS = {'true' if unique_keys else 'false'}\nRUN = '{time.time_ns()}'\n"
        + WRK_SCRIPT
    )
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    cpu_before = cpu_seconds_by_pid(database=database, sessions=sessions)
    machine_before = machine_busy_seconds()
    children_before = os.times()
    try:
        result = subprocess.run(
            [
                "wrk",
                "-t",
                str(threads),
                "-c",
                str(connections),
                "-d",
                f"{seconds}s",
                "-s",
                handle.name,
                url,
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=seconds + 60,
        )
    finally:
        os.unlink(handle.name)
    match = re.search(r"WRKJSON (\{.*\})", result.stdout)
    if not match:
        raise SystemExit(f"could not read wrk's output:\n{result.stdout}\n{result.stderr}")
    raw = json.loads(match.group(1))
    cpu = cpu_used(cpu_before, cpu_seconds_by_pid(database=database, sessions=sessions))
    children_after = os.times()
    cpu["wrk"] = (children_after.children_user + children_after.children_system) - (
        children_before.children_user + children_before.children_system
    )
    machine = machine_busy_seconds() - machine_before
    requests = max(raw["requests"], 1)
    return {
        **{f"cpu_ms_{group}": seconds * 1000 / requests for group, seconds in cpu.items()},
        # Everything else the machine did meanwhile (other PostgreSQL processes, the kernel,
        # anyone else's work), per request of this run.
        "cpu_ms_other": (machine - sum(cpu.values())) * 1000 / requests,
        "rps": raw["requests"] / (raw["duration_us"] / 1e6),
        "p50_ms": raw["p50_us"] / 1000,
        "p99_ms": raw["p99_us"] / 1000,
        "requests": raw["requests"],
        "non2xx": raw["non2xx"],
        "socket_errors": raw["socket_errors"],
    }


CPU_GROUPS = ("server", "postgres", "redis", "wrk")


def print_table(rows: list[tuple[str, dict[str, float]]]) -> None:
    """Throughput and latency, then the CPU each request cost each process group (ms)."""
    print(
        f"{'':34} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7}  CPU ms/request: "
        + " ".join(f"{group:>8}" for group in (*CPU_GROUPS, "total"))
    )
    for name, row in rows:
        cpu = [row.get(f"cpu_ms_{group}", 0.0) for group in CPU_GROUPS]
        print(
            f"{name:34} {row['rps']:7.0f} {row['p50_ms']:7.1f} {row['p99_ms']:7.1f} "
            f"{row['non2xx']:7.0f}  {'':15} " + " ".join(f"{v:8.2f}" for v in (*cpu, sum(cpu)))
        )


# The refund action type with a webhook executor and one auto-approving rule that bench/execution.py
# and bench/memory.py apply; `.format(port=...)` names the receiver's port.
REFUND_CONFIG = """\
action_types:
  - key: refund.issue
    title: Issue a refund
    risk: medium
    executor: {{kind: webhook, url: "http://127.0.0.1:{port}/execute"}}
    reviewer_group: support
    payload_schema:
      type: object
      required: [order_id, amount, currency]
      properties:
        order_id: {{type: string}}
        amount: {{type: number, exclusiveMinimum: 0}}
        currency: {{type: string, enum: [EUR, USD, GBP]}}
rules:
  - name: bench-small-confident
    action_type: refund.issue
    priority: 10
    when: "confidence >= 0.9 && payload.amount <= 50.0"
    outcome: approve
    reason: Small refund, model confident.
"""
