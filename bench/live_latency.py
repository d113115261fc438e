"""Live queue latency and queue page time, each against a floor measured in the same run.

1. Live push: uvicorn (1 worker) on a fresh PostgreSQL database with the Redis channel layer;
   20 websocket clients connected as 20 reviewers. For each of 200 proposals POSTed to
   /api/v1/proposals one after another: the time from the POST returning (and, for reference,
   from it being sent) to the row's HTML arriving at each client; p50/p95 over the
   200 x 20 arrivals. Floor: the same 20 sockets, a message of the same size sent to the
   same channel group straight from this process through Redis (no request, no database, no
   rendering): what the transport alone costs.
2. Queue page: 100,000 pending proposals (bulk-inserted, three action types); the server time
   of GET / for a reviewer (Django's test client in this process, so no network; wall and CPU
   time), first page, a deep page (cursor), a type filter and newest-first; p50/p95 over 60
   requests each. Floor: the same first page measured before the bulk insert, while only the
   ~200 proposals of part 1 wait, so the ratio shows what 100,000 pending rows cost. The
   sign-in page (same middleware and session, no queue query) is printed for reference.

    .venv/bin/python bench/live_latency.py [--proposals 200] [--clients 20] [--pending 100000]

3. `--load`: live under load (issue 16), on the production process setup: the Procfile's `web`
   (granian WSGI, 2 workers x 8 threads) and `live` (uvicorn, 1 worker, the Procfile's options)
   behind deploy/nginx.conf (as tests/stack.py runs it). 50 reviewer sockets (`--clients`)
   connected through the proxy, held by a separate process (raw websocket clients on uvloop that
   offer permessage-deflate as browsers do, `--no-deflate-offer` not) so that reading them does
   not slow the submitter; services submit at
   `--rate` proposals a second (default 100, open loop: each POST starts at its scheduled time
   whatever the others do) for `--seconds` (default 30). Per arrival (proposals x sockets):
   scheduled POST -> row at the socket, POST returned -> row; p50/p95/max and missing arrivals.
   Floor, same run and same sockets: group_send from this process at the same rate (Redis ->
   `live` -> sockets, no request, no database, no rendering). Also the CPU each process group
   spent per proposal.

    .venv/bin/python bench/live_latency.py --load [--clients 50] [--rate 100] [--seconds 30]

Environment: BENCH_REDIS_URL (default redis://127.0.0.1:6379/5; the bench flushes nothing),
BENCH_DATABASE (default gh_ui_bench, dropped and re-created). `--load` also: BENCH_WEB_PORT,
BENCH_LIVE_PORT, BENCH_PROXY_PORT (default free ports); BENCH_LIVE_SERVER (uvicorn, or
granian-asgi), BENCH_LIVE_WORKERS (1), BENCH_LIVE_ARGS (default the Procfile's
`--ws-per-message-deflate false`; "" for uvicorn's defaults), BENCH_LIVE_PYTHON_ARGS (before
`-m uvicorn`, e.g. a profiler's wrapper).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import ROOT, bench_env, fresh_database, manage, uvicorn

ROW_ID = re.compile(r'<tr id="proposal-([0-9a-f-]{36})" class="queue-row"')
CONFIG = """\
action_types:
  - key: refund.issue
    title: Issue a refund
    risk: medium
    executor: {kind: none}
    reviewer_group: support
    payload_schema:
      type: object
      required: [order_id, amount, currency]
      properties:
        order_id: {type: string}
        amount: {type: number}
        currency: {type: string}
  - key: email.send
    title: Send a customer email
    risk: low
    irreversible: true
    executor: {kind: none}
    reviewer_group: support
    payload_schema: {type: object}
  - key: account.close
    title: Close an account
    risk: high
    irreversible: true
    approvals_required: 2
    executor: {kind: none}
    reviewer_group: support
    payload_schema: {type: object}
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def setup_django(env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    import django

    django.setup()


def prepare_database(database: str, redis_url: str, **extra: str) -> dict[str, str]:
    """A fresh database with the action types; Django set up on it here. Returns the env."""
    fresh_database(database)
    env = bench_env(
        database,
        REDIS_URL=redis_url,
        ALLOWED_HOSTS="127.0.0.1,testserver",
        SECURE_COOKIES="0",
        **extra,
    )
    manage(env, "migrate", "--noinput", "-v", "0")
    manage(env, "collectstatic", "--noinput", "-v", "0")
    config = ROOT / ".bench-live-config.yaml"
    config.write_text(CONFIG)
    try:
        manage(env, "apply", str(config))
    finally:
        config.unlink()
    setup_django(env)
    return env


def prepare(clients: int) -> tuple[str, list[str], int]:
    """Reviewers with sessions, a service key; returns (key, session cookies, type id)."""
    from django.conf import settings
    from django.contrib.auth.models import Group, User
    from django.test import Client

    from approvals import services
    from approvals.models import ActionType

    support = Group.objects.get(name="support")
    cookies = []
    for i in range(clients):
        user = User.objects.create_user(f"reviewer{i}", password="bench-password-123")
        user.groups.add(support)
        client = Client()
        client.force_login(user)
        cookies.append(
            f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"
        )
    _, key = services.service_create(
        name="bench-shop", action_type_keys=["refund.issue", "email.send", "account.close"]
    )
    return key, cookies, ActionType.objects.get(key="refund.issue").pk


def body(i: int) -> dict[str, Any]:
    return {
        "action_type": "refund.issue",
        "payload": {"order_id": f"ORD-{100000 + i}", "amount": 20.0 + i % 50, "currency": "EUR"},
        "confidence": 0.8,
        "summary": f"Refund order ORD-{100000 + i}: parcel arrived late",
        "rationale": "The carrier's tracking shows delivery nine days late. " * 4,
        "model": "gpt-4o-mini",
        "prompt_version": "refunds@7",
        "feature": "support-refunds",
    }


async def open_sockets(
    url: str, origin: str, cookies: list[str], clock: Callable[[], float]
) -> tuple[list[dict[str, float]], list[Any], list[asyncio.Task[None]]]:
    """One socket per session cookie, each read by a task that notes (on `clock`) when each
    proposal's row first arrives: (arrivals per socket, sockets, reader tasks)."""
    import websockets

    arrivals: list[dict[str, float]] = [{} for _ in cookies]
    sockets = [
        await websockets.connect(
            url, additional_headers={"Origin": origin, "Cookie": c}, max_size=2**22
        )
        for c in cookies
    ]

    async def read(index: int, ws: Any) -> None:
        async for message in ws:
            now = clock()
            match = ROW_ID.search(message)
            if match:
                arrivals[index].setdefault(match.group(1), now)

    readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(sockets)]
    return arrivals, sockets, readers


async def live_round(
    base: str, key: str, cookies: list[str], proposals: int, group: str
) -> dict[str, Any]:
    import httpx
    from channels.layers import get_channel_layer

    ws_url = base.replace("http://", "ws://") + "/ws/queue/"
    arrivals, sockets, readers = await open_sockets(ws_url, base, cookies, time.perf_counter)
    await asyncio.sleep(0.5)

    async def wait_all(ids: list[str], timeout: float = 10) -> None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if all(all(i in a for i in ids) for a in arrivals):
                return
            await asyncio.sleep(0.005)

    # Floor: the transport alone. Same sockets, same group, a message of the same size.
    layer = get_channel_layer()
    sample_html = ""
    floor_sent: dict[str, float] = {}
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {key}"}) as http:
        warm = await http.post("/api/v1/proposals", json=body(999_999))
        assert warm.status_code == 201, warm.text
        await wait_all([warm.json()["id"]])
        sample_html = "x" * 1500
        for _ in range(proposals):
            fake = str(uuid.uuid4())
            html = f'<tr id="proposal-{fake}" class="queue-row" data-queue-row>{sample_html}</tr>'
            floor_sent[fake] = time.perf_counter()
            await layer.group_send(
                group, {"type": "proposal.update", "html": html, "raised_by": ""}
            )
            await wait_all([fake], timeout=5)

        sent: dict[str, float] = {}
        returned: dict[str, float] = {}
        for i in range(proposals):
            started = time.perf_counter()
            response = await http.post("/api/v1/proposals", json=body(i))
            done = time.perf_counter()
            assert response.status_code == 201, response.text
            pid = response.json()["id"]
            sent[pid], returned[pid] = started, done
            await wait_all([pid], timeout=5)
    for task in readers:
        task.cancel()
    for ws in sockets:
        await ws.close()

    def latencies(origin: dict[str, float], clamp: bool) -> tuple[list[float], int, int]:
        values, missing, early = [], 0, 0
        for per_client in arrivals:
            for pid, t0 in origin.items():
                if pid not in per_client:
                    missing += 1
                    continue
                delta = (per_client[pid] - t0) * 1000
                if delta < 0:
                    early += 1
                values.append(max(0.0, delta) if clamp else delta)
        return values, missing, early

    from_return, missing, early = latencies(returned, clamp=True)
    from_send, _, _ = latencies(sent, clamp=False)
    floor, floor_missing, _ = latencies(floor_sent, clamp=False)
    return {
        "from_return": from_return,
        "from_send": from_send,
        "floor": floor,
        "missing": missing,
        "floor_missing": floor_missing,
        "before_response": early,
        "post_ms": [(returned[p] - sent[p]) * 1000 for p in sent],
    }


def insert_pending(count: int) -> None:
    import random

    from django.db import connection
    from django.utils import timezone

    from approvals.models import ActionType, Proposal, Service, payload_hash

    rng = random.Random(1)
    service = Service.objects.get(name="bench-shop")
    types = list(ActionType.objects.all())
    now = timezone.now()
    batch: list[Proposal] = []
    for i in range(count):
        payload = {
            "order_id": f"ORD-{i}",
            "amount": round(rng.uniform(5, 900), 2),
            "currency": "EUR",
        }
        created = now - timedelta(seconds=rng.uniform(0, 72 * 3600))
        batch.append(
            Proposal(
                service=service,
                action_type=types[i % len(types)],
                payload=payload,
                payload_hash=payload_hash(payload),
                confidence=round(rng.random(), 2),
                summary=f"Refund order ORD-{i}: parcel arrived late",
                rationale="Tracking shows a late delivery.",
                state=Proposal.State.PENDING_REVIEW,
                created_at=created,
                updated_at=created,
                expires_at=now + timedelta(hours=24),
            )
        )
        if len(batch) == 5000:
            Proposal.objects.bulk_create(batch)
            batch = []
    if batch:
        Proposal.objects.bulk_create(batch)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE approvals_proposal")


def small_queue_times(requests: int) -> tuple[list[float], list[float]]:
    """The floor for the queue page: the same first page while only a few hundred wait."""
    from django.contrib.auth.models import User
    from django.test import Client

    client = Client()
    client.force_login(User.objects.get(username="reviewer0"))
    for _ in range(5):
        assert client.get("/").status_code == 200
    wall, cpu = [], []
    for _ in range(requests):
        started, started_cpu = time.perf_counter(), time.thread_time()
        assert client.get("/").status_code == 200
        wall.append((time.perf_counter() - started) * 1000)
        cpu.append((time.thread_time() - started_cpu) * 1000)
    return wall, cpu


def page_times(requests: int) -> dict[str, tuple[list[float], list[float]]]:
    from django.contrib.auth.models import User
    from django.test import Client

    from foundation import cursors

    user = User.objects.get(username="reviewer0")
    client = Client()
    client.force_login(user)
    # A cursor deep into the queue: 1,000 pages of 50 in (or half-way for a smaller run).
    from approvals.models import Proposal

    pending = Proposal.objects.filter(state="pending_review").order_by("created_at", "id")
    depth = min(50_000, pending.count() // 2)
    moment, pk = pending.values_list("created_at", "id")[depth]
    deep_cursor = cursors.encode(moment, pk)
    urls = {
        "sign-in page (no queue query)": ("/login/", Client()),
        "queue, first page": ("/", client),
        "queue, 1,000 pages deep": (f"/?after={deep_cursor}", client),
        "queue, one action type": ("/?type=refund.issue", client),
        "queue, high risk, newest first": ("/?risk=high&order=newest", client),
        "queue rows (htmx fragment)": ("/?__rows", client),
    }
    results: dict[str, tuple[list[float], list[float]]] = {}
    for name, (url, c) in urls.items():
        headers = {"HX-Request": "true", "HX-Target": "queue-rows"} if url == "/?__rows" else {}
        path = "/" if url == "/?__rows" else url
        for _ in range(5):
            response = c.get(path, headers=headers)
            assert response.status_code == 200, (url, response.status_code)
        wall, cpu = [], []
        for _ in range(requests):
            started, started_cpu = time.perf_counter(), time.thread_time()
            response = c.get(path, headers=headers)
            wall.append((time.perf_counter() - started) * 1000)
            cpu.append((time.thread_time() - started_cpu) * 1000)
            assert response.status_code == 200
        results[name] = (wall, cpu)
    return results


def explain() -> str:
    from django.contrib.auth.models import User

    from approvals import selectors

    user = User.objects.get(username="reviewer0")
    types = [t.pk for t in selectors.visible_action_types(user=user)]
    from approvals.models import Proposal

    queryset = Proposal.objects.filter(state="pending_review", action_type_id__in=types).order_by(
        "created_at", "id"
    )[:51]
    plan = queryset.explain(analyze=True)
    return "\n".join(line for line in plan.splitlines() if "Index" in line or "Execution" in line)


# --- 3. live under load (--load) ------------------------------------------------------------

Arrivals = list[dict[str, float]]  # per socket: proposal id -> first arrival (time.monotonic)


class RawSocket:
    """A websocket client that does what a browser's does for the queue page and no more:
    the handshake (offering permessage-deflate as Chrome does), reading the server's frames
    (inflating compressed ones), answering pings. The `websockets` client cost 100 µs of CPU
    a message, on the same two cores as the servers it measures (as httpx did for the
    submitter): 50 sockets at 100 rows a second took half a core."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.inflate: Any = None
        self.deflate_offered = False

    @classmethod
    async def connect(cls, url: str, origin: str, cookie: str, deflate: bool) -> RawSocket:
        import base64
        import zlib

        host, port_path = url.removeprefix("ws://").split(":", 1)
        port, path = port_path.split("/", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        key = base64.b64encode(os.urandom(16)).decode()
        offer = (
            "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
            if deflate
            else ""
        )
        writer.write(
            f"GET /{path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Origin: {origin}\r\nCookie: {cookie}\r\n{offer}\r\n".encode()
        )
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
        if not head.startswith("HTTP/1.1 101"):
            raise SystemExit(f"the socket was refused:\n{head}")
        socket = cls(reader, writer)
        if re.search(r"(?im)^sec-websocket-extensions:.*permessage-deflate", head):
            socket.inflate = zlib.decompressobj(-15)  # context kept across messages
        return socket

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)

    async def messages(self) -> Any:
        """Each text message as it completes (bytes)."""
        read = self.reader.readexactly
        parts: list[bytes] = []
        compressed = False
        while True:
            first, second = await read(2)
            length = second & 0x7F
            if length == 126:
                length = int.from_bytes(await read(2), "big")
            elif length == 127:
                length = int.from_bytes(await read(8), "big")
            payload = await read(length) if length else b""
            opcode = first & 0x0F
            if opcode == 0x9:  # ping: a browser answers
                self._send(0xA, payload)
                continue
            if opcode == 0x8:
                return
            if opcode in (0x1, 0x2):
                parts, compressed = [], bool(first & 0x40)
            elif opcode != 0x0:
                continue  # pong
            parts.append(payload)
            if first & 0x80:
                data = b"".join(parts)
                if compressed:
                    data = self.inflate.decompress(data + b"\x00\x00\xff\xff")
                yield data

    def close(self) -> None:
        self._send(0x8, (1000).to_bytes(2, "big"))
        self.writer.close()


def socket_reader(
    url: str,
    origin: str,
    cookies: list[str],
    deflate: bool,
    ready: Any,
    go: Any,
    stop: Any,
    out: Any,
) -> None:
    """In a process of its own: connect every socket, note when each row first arrives at each,
    and send the notes back once `stop` is set. (CLOCK_MONOTONIC is the machine's, so its
    times compare with the submitter's.)"""
    row_id = re.compile(rb'<tr id="proposal-([0-9a-f-]{36})" class="queue-row"')

    async def run() -> tuple[Arrivals, float, bool]:
        arrivals: Arrivals = [{} for _ in cookies]
        sockets = [await RawSocket.connect(url, origin, c, deflate) for c in cookies]

        async def read(index: int, ws: RawSocket) -> None:
            seen = arrivals[index]
            async for message in ws.messages():
                now = time.monotonic()
                match = row_id.search(message)
                if match:
                    seen.setdefault(match.group(1).decode(), now)

        readers = [asyncio.create_task(read(i, ws)) for i, ws in enumerate(sockets)]
        await asyncio.sleep(1)  # presence marked, groups joined
        ready.set()
        while not go.is_set():  # the floor: its rows are read, their CPU is not counted
            await asyncio.sleep(0.02)
        started = time.process_time()
        while not stop.is_set():
            await asyncio.sleep(0.05)
        cpu = time.process_time() - started
        for task in readers:
            task.cancel()
        for ws in sockets:
            ws.close()
        return arrivals, cpu, all(ws.inflate is not None for ws in sockets)

    import uvloop  # as cheap a reader as can be: the browsers are not on the server's cores

    out.send(uvloop.run(run()))


async def floor_at_rate(group: str, size: int, rate: float, seconds: float) -> dict[str, float]:
    """group_send from here at `rate` a second: the transport alone. Scheduled times."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    scheduled: dict[str, float] = {}
    start = time.monotonic() + 0.1
    for i in range(int(rate * seconds)):
        at = start + i / rate
        await asyncio.sleep(max(0.0, at - time.monotonic()))
        fake = str(uuid.uuid4())
        html = f'<tr id="proposal-{fake}" class="queue-row" data-queue-row>'
        scheduled[fake] = at
        await layer.group_send(
            group,
            {
                "type": "proposal.update",
                "html": html + "x" * max(0, size - len(html)),
                "raised_by": "",
            },
        )
    return scheduled


Submitted = list[
    tuple[float, float, float, str | None, int]
]  # scheduled, sent, returned, id, status


async def submit_at_rate(base: str, key: str, rate: float, seconds: float) -> Submitted:
    """Open loop: POST i starts at start + i / rate, whether or not the others have returned.
    A raw HTTP/1.1 client on asyncio streams with kept-alive connections: httpx cost the
    submitter 7-11 ms of CPU a POST, on the same two cores as the servers it measures."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    records: Submitted = []

    async def post(i: int) -> tuple[int, str | None]:
        payload = json.dumps(body(i)).encode()
        head = (
            f"POST /api/v1/proposals HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(payload)}\r\n\r\n"
        ).encode()
        reader, writer = idle.pop() if idle else await asyncio.open_connection(host, int(port))
        try:
            writer.write(head + payload)
            answer = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)\r\ncontent-length: *(\d+)", answer)
            text = await reader.readexactly(int(length.group(1))) if length else b""
        except BaseException:
            writer.close()
            raise
        if re.search(rb"(?i)\r\nconnection: *close", answer):
            writer.close()
        else:
            idle.append((reader, writer))
        status = int(answer.split(b" ", 2)[1])
        return status, json.loads(text)["id"] if status == 201 else None

    async def one(i: int, at: float) -> None:
        sent = time.monotonic()
        try:
            status, pid = await post(i)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            records.append((at, sent, time.monotonic(), None, 0))
            return
        records.append((at, sent, time.monotonic(), pid, status))

    for i in range(20):  # warm: connections open, caches filled (not counted)
        await post(1_000_000 + i)
    await asyncio.sleep(1)
    tasks = []
    start = time.monotonic() + 0.1
    for i in range(int(rate * seconds)):
        at = start + i / rate
        delay = at - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, at)))
    await asyncio.gather(*tasks)
    for _, writer in idle:
        writer.close()
    return records


def arrival_latencies(
    arrivals: Arrivals, origin: dict[str, float], clamp: bool = False
) -> tuple[list[float], int]:
    values, missing = [], 0
    for per_socket in arrivals:
        for pid, t0 in origin.items():
            if pid not in per_socket:
                missing += 1
                continue
            delta = (per_socket[pid] - t0) * 1000
            values.append(max(0.0, delta) if clamp else delta)
    return values, missing


def main_load(args: argparse.Namespace) -> None:
    import multiprocessing

    from common import SESSIONS, cpu_seconds_by_pid, cpu_used, live_args, production_stack

    database = os.environ.get("BENCH_DATABASE", "gh_ui_load_bench")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
    env = prepare_database(database, redis_url, DB_POOL_MAX="16")
    from approvals import events

    key, cookies, type_id = prepare(args.clients)
    group = events.group_for_action_type(type_id)
    print(
        f"Live under load: {args.clients} reviewer sockets, {args.rate:g} proposals/s for "
        f"{args.seconds:g} s; web granian WSGI 2x8 + live behind nginx, Redis layer; live: "
        f"{os.environ.get('BENCH_LIVE_SERVER') or 'uvicorn'} "
        f"x{os.environ.get('BENCH_LIVE_WORKERS') or 1} {live_args()}"
    )
    print(f"load before: {loadavg()}")
    with production_stack(env) as (base, web, live, proxy):
        context = multiprocessing.get_context("spawn")
        ready, go, stop = context.Event(), context.Event(), context.Event()
        receive, send = context.Pipe(duplex=False)
        try:
            reader = context.Process(
                target=socket_reader,
                args=(
                    base.replace("http://", "ws://") + "/ws/queue/",
                    base,
                    cookies,
                    not args.no_deflate_offer,
                    ready,
                    go,
                    stop,
                    send,
                ),
            )
            reader.start()
            assert ready.wait(120), "the sockets did not connect"
            sample = asyncio.run(submit_at_rate(base, key, 1, 1))[0][3]
            message = events.render_update(uuid.UUID(sample)) if sample else None
            size = len(message["html"]) if message else 3000
            floor = asyncio.run(floor_at_rate(group, size, args.rate, args.floor_seconds))
            time.sleep(2)
            load_floor = loadavg()
            sessions = {"web": SESSIONS[web], "live": SESSIONS[live]}
            cpu_before = {
                name: cpu_seconds_by_pid(database=database, sessions={sid})
                for name, sid in sessions.items()
            }
            go.set()
            self_before = time.process_time()
            records = asyncio.run(submit_at_rate(base, key, args.rate, args.seconds))
            self_cpu = time.process_time() - self_before
            time.sleep(5)  # stragglers
            cpu_after = {
                name: cpu_seconds_by_pid(database=database, sessions={sid})
                for name, sid in sessions.items()
            }
            load_run = loadavg()
            stop.set()
            arrivals, reader_cpu, compressed = receive.recv()
            reader.join(timeout=30)
            errors = proxy.log()
        finally:
            stop.set()

    ok = [r for r in records if r[3] is not None]
    scheduled = {r[3]: r[0] for r in ok if r[3]}
    returned = {r[3]: r[2] for r in ok if r[3]}
    span = max(r[0] for r in records) - min(r[0] for r in records)
    from_scheduled, missing = arrival_latencies(arrivals, scheduled)
    from_return, _ = arrival_latencies(arrivals, returned, clamp=True)
    floor_values, floor_missing = arrival_latencies(arrivals, floor)
    rows = [
        ("floor: group_send → socket", floor_values),
        ("POST scheduled → row at socket", from_scheduled),
        ("POST returned → row at socket", from_return),
        ("POST round trip (scheduled → returned)", [(r[2] - r[0]) * 1000 for r in ok]),
    ]
    print(f"floor at {args.rate:g}/s for {args.floor_seconds:g} s ({load_floor}); run ({load_run})")
    print(f"{'':40} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'n':>7}")
    for name, values in rows:
        print(
            f"{name:40} {pct(values, 50):8.2f} {pct(values, 95):8.2f} {max(values):8.2f} "
            f"{len(values):7d}"
        )
    print(
        "sockets: permessage-deflate "
        + ("offered" if not args.no_deflate_offer else "not offered")
        + (", negotiated" if compressed else ", not negotiated")
    )
    statuses = sorted({r[4] for r in records})
    print(
        f"submitted {len(records)} in {span:.1f} s ({len(records) / max(span, 1e-9):.1f}/s "
        f"scheduled), {len(ok)} answered 201 (statuses {statuses}); "
        f"missing arrivals {missing} of {len(scheduled) * len(arrivals)} "
        f"(floor {floor_missing} of {len(floor) * len(arrivals)})"
    )
    per_proposal = max(len(ok), 1)
    cpu = {name: cpu_used(cpu_before[name], cpu_after[name]) for name in sessions}
    print(
        "CPU ms per proposal: "
        + ", ".join(f"{name} {cpu[name]['server'] * 1000 / per_proposal:.2f}" for name in sessions)
        + f", postgres {cpu['web']['postgres'] * 1000 / per_proposal:.2f}"
        + f", redis {cpu['web']['redis'] * 1000 / per_proposal:.2f}"
        + f", submitter {self_cpu * 1000 / per_proposal:.2f}"
        + f", socket reader {reader_cpu * 1000 / per_proposal:.2f}"
    )
    p95 = pct(from_scheduled, 95)
    print(
        f"ratio p95 (scheduled → row) / floor p95: {p95 / pct(floor_values, 95):.1f}; "
        f"target p95 ≤ 150 ms: {'met' if p95 <= 150 and not missing else 'MISSED'}"
    )
    if errors.strip():
        print("nginx said:\n" + errors[-2000:])


def loadavg() -> str:
    return "load " + ", ".join(f"{value:.2f}" for value in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--proposals", type=int, default=200)
    parser.add_argument("--clients", type=int, default=None, help="20; 50 with --load")
    parser.add_argument("--pending", type=int, default=100_000)
    parser.add_argument("--page-requests", type=int, default=60)
    parser.add_argument("--load", action="store_true", help="live under load (part 3)")
    parser.add_argument("--rate", type=float, default=100, help="--load: proposals a second")
    parser.add_argument("--seconds", type=float, default=30, help="--load: how long")
    parser.add_argument("--floor-seconds", type=float, default=10, help="--load: the floor's")
    parser.add_argument(
        "--no-deflate-offer",
        action="store_true",
        help="--load: the sockets do not offer permessage-deflate (browsers do)",
    )
    args = parser.parse_args()
    if args.load:
        args.clients = args.clients or 50
        main_load(args)
        return
    args.clients = args.clients or 20

    database = os.environ.get("BENCH_DATABASE", "gh_ui_bench")
    redis_url = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/5")
    env = prepare_database(database, redis_url)
    from approvals.events import group_for_action_type

    key, cookies, type_id = prepare(args.clients)

    print(
        f"Live push: {args.clients} websocket clients, {args.proposals} proposals, uvicorn 1 worker, Redis layer"
    )
    with uvicorn(env, workers=1) as base:
        result = asyncio.run(
            live_round(base, key, cookies, args.proposals, group_for_action_type(type_id))
        )
    rows = [
        ("floor: group_send → client", result["floor"]),
        ("POST returned → row at client", result["from_return"]),
        ("POST sent → row at client", result["from_send"]),
        ("POST round trip itself", result["post_ms"]),
    ]
    print(f"{'':34} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'n':>6}")
    for name, values in rows:
        print(
            f"{name:34} {pct(values, 50):8.2f} {pct(values, 95):8.2f} {max(values):8.2f} {len(values):6d}"
        )
    print(
        f"missing arrivals: {result['missing']} (floor {result['floor_missing']}); "
        f"rows that arrived before the POST response: {result['before_response']}"
    )
    print(
        f"ratio p95 (POST sent → row) / floor p95: {pct(result['from_send'], 95) / pct(result['floor'], 95):.1f}; "
        f"target p95 (POST returned → row) ≤ 150 ms: {'met' if pct(result['from_return'], 95) <= 150 else 'MISSED'}"
    )

    print(f"\nQueue page with {args.pending:,} pending proposals (server time, in-process client)")
    from approvals.models import Proposal

    few = Proposal.objects.filter(state="pending_review").count()
    small = small_queue_times(args.page_requests)
    started = time.perf_counter()
    insert_pending(args.pending)
    print(f"(inserted in {time.perf_counter() - started:.1f} s)")
    times = {f"floor: queue, first page, {few} pending": small, **page_times(args.page_requests)}
    floor = statistics.median(small[0])
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'':34} {'p50 ms':>8} {'p95 ms':>8} {'cpu p50':>8} {'x floor':>8}")
    for name, (wall, cpu) in times.items():
        print(
            f"{name:34} {pct(wall, 50):8.2f} {pct(wall, 95):8.2f} {pct(cpu, 50):8.2f} "
            f"{pct(wall, 50) / floor:8.1f}"
        )
    queue = [(n, w, c) for n, (w, c) in times.items() if n.startswith("queue")]
    worst = max(pct(w, 95) for _, w, _ in queue)
    print(
        f"ratio first page with {args.pending:,} / with {few} pending (p50): "
        f"{pct(times['queue, first page'][0], 50) / floor:.2f}; "
        f"worst CPU p50 {max(pct(c, 50) for _, _, c in queue):.1f} ms"
    )
    print(f"target queue page ≤ 50 ms (worst p95 above): {'met' if worst <= 50 else 'MISSED'}")
    print("\nPlan of the first page's query:\n" + explain())
    print(json.dumps({"live_p95_ms": pct(result["from_return"], 95), "queue_worst_p95_ms": worst}))


if __name__ == "__main__":
    main()
