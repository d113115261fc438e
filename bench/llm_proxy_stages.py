"""Where the proxy's time goes on the server side, stage by stage, in one process.

    REDIS_URL=redis://127.0.0.1:6379/1 .venv/bin/python bench/llm_proxy_stages.py [--calls 500]

A fresh database (bench_llm_stages), the fake provider (tests/llmcalls/fake_provider.py) in its
own process, and Gatehouse's WSGI application called directly with a WSGI environ (no server, no
socket into Gatehouse): what granian hands the application is the same, so the difference between
these stages and bench/llm_overhead.py's proxy figure is the server and the client's two hops.
Each stage is timed alone, interleaved with the others call by call; p50 / p99 in ms.
One stage times a pooled database connection taken and given back, as every request that
touches the database does (the view alone keeps its connection between calls; the WSGI stages
take one from the pool and give it back at request_finished).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import bench_env, fresh_database, manage  # noqa: E402
from llm_overhead import MESSAGES, bench_route, wait_for_port  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--database", default="bench_llm_stages")
    parser.add_argument("--fake-port", type=int, default=18352)
    args = parser.parse_args()

    redis_url = os.environ.get("REDIS_URL", "")
    env = bench_env(args.database)
    if redis_url:
        env["REDIS_URL"] = redis_url
    os.environ.clear()
    os.environ.update(env, DJANGO_SETTINGS_MODULE="config.settings")
    fresh_database(args.database)
    manage(env, "migrate", "--noinput")
    fake = subprocess.Popen(
        [sys.executable, "-m", "tests.llmcalls.fake_provider", str(args.fake_port), "900"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
    )
    try:
        wait_for_port(args.fake_port, fake)
        import django

        django.setup()
        run(args)
    finally:
        fake.terminate()
        fake.wait(timeout=10)


def run(args: argparse.Namespace) -> None:
    from django.conf import settings as django_settings
    from django.core.handlers.wsgi import WSGIRequest

    from approvals.services import api_key_authenticate
    from config.wsgi import application
    from foundation import jsonfast, problems
    from llmcalls import client, proxy, routing, services
    from llmcalls.breaker import breaker
    from llmcalls.models import LLMCall

    base_url, key = bench_route(args.fake_port)
    body = json.dumps({"model": "ok", "messages": MESSAGES}).encode()
    stream_body = json.dumps({"model": "ok", "messages": MESSAGES, "stream": True}).encode()

    def environ(method: str, path: str, payload: bytes = b"") -> dict[str, Any]:
        return {
            "REQUEST_METHOD": method,
            "PATH_INFO": path,
            "SCRIPT_NAME": "",
            "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "80",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "HTTP_HOST": "127.0.0.1",
            "HTTP_AUTHORIZATION": f"Bearer {key}",
            "CONTENT_TYPE": "application/json",
            "CONTENT_LENGTH": str(len(payload)),
            "wsgi.input": io.BytesIO(payload),
            "wsgi.url_scheme": "http",
            "wsgi.errors": sys.stderr,
            "wsgi.multithread": True,
            "wsgi.multiprocess": True,
            "wsgi.run_once": False,
        }

    def request(method: str, path: str, payload: bytes = b"") -> WSGIRequest:
        return WSGIRequest(environ(method, path, payload))

    def wsgi(method: str, path: str, payload: bytes = b"") -> Callable[[], None]:
        def call() -> None:
            status: list[str] = []

            def start_response(line: str, headers: Any, exc_info: Any = None) -> Any:
                status.append(line)

            out = application(environ(method, path, payload), start_response)
            try:
                for _ in out:
                    pass
            finally:
                closing = getattr(out, "close", None)
                if closing is not None:
                    closing()
            assert status[0].startswith("200"), status

        return call

    target = routing.route_for("bench-llm").targets[0]  # type: ignore[union-attr]
    provider = client._client(target)
    pooled, headers = provider.client, provider.headers  # the headers llmcalls sends
    upstream = jsonfast.dumps({"model": "ok", "messages": MESSAGES})
    conn = http.client.HTTPConnection("127.0.0.1", args.fake_port)

    def httpx2_post() -> None:
        pooled.post(f"{base_url}/chat/completions", content=upstream, headers=headers).read()

    def httpx2_send() -> None:
        django_settings.LLM_LEAN_HTTP = False
        try:
            client._post(target, "/chat/completions", {"model": "ok", "messages": MESSAGES}, 10.0)
        finally:
            django_settings.LLM_LEAN_HTTP = True

    import urllib3

    pool = urllib3.HTTPConnectionPool("127.0.0.1", args.fake_port, maxsize=10, retries=False)

    def urllib3_post() -> None:
        pool.urlopen(
            "POST", "/bench/v1/chat/completions", body=upstream, headers=headers, redirect=False
        ).read()

    def http_client_post() -> None:
        conn.request("POST", "/bench/v1/chat/completions", upstream, headers)
        conn.getresponse().read()

    record: dict[str, Any] = {}

    def log_write() -> None:
        fields = dict(record)
        fields.pop("id")
        services.call_log_write(record=fields)

    from django.db import connection

    def pool_round() -> None:
        # What a request's database hygiene costs: the first query takes a connection from the
        # pool (Django's connect), request_finished gives it back (close).
        connection.close()
        connection.ensure_connection()
        connection.close()

    # The bare proxy floor's application (bench/bare_proxy.py), called the same way.
    os.environ["BARE_PROXY_UPSTREAM"] = base_url
    import bare_proxy

    def bare(payload: bytes) -> Callable[[], None]:
        def call() -> None:
            status: list[str] = []
            env = environ("POST", "/v1/chat/completions", payload)
            out = bare_proxy.application(env, lambda line, headers: status.append(line))
            for _ in out:
                pass
            assert status[0].startswith("200"), status

        return call

    stages: dict[str, Callable[[], Any]] = {
        "wsgi POST /llm/v1/chat/completions": wsgi("POST", "/llm/v1/chat/completions", body),
        "bare proxy app, POST": bare(body),
        "bare proxy app, POST, stream": bare(stream_body),
        "wsgi POST …, stream": wsgi("POST", "/llm/v1/chat/completions", stream_body),
        "wsgi GET /llm/v1/models": wsgi("GET", "/llm/v1/models"),
        "client.complete()": lambda: client.complete(feature="bench-llm", messages=MESSAGES),
        "api_key_authenticate": lambda: api_key_authenticate(token=key),
        "parse_json_body": lambda: problems.parse_json_body(
            request("POST", "/llm/v1/chat/completions", body)
        ),
        "breaker().check": lambda: breaker().check(target.key),
        "upstream POST, httpx2 Client.post": httpx2_post,
        "upstream POST, client._post (llmcalls)": lambda: client._post(
            target, "/chat/completions", {"model": "ok", "messages": MESSAGES}, 10.0
        ),
        "upstream POST, client._post on httpx2 (LLM_LEAN_HTTP off)": httpx2_send,
        "upstream POST, urllib3 (pooled)": urllib3_post,
        "upstream POST, http.client (kept alive)": http_client_post,
        "view alone: proxy.models(request)": lambda: proxy.models(request("GET", "/llm/v1/models")),
        "view alone: proxy.chat_completions(request)": lambda: proxy.chat_completions(
            request("POST", "/llm/v1/chat/completions", body)
        ),
        "call_log_write": log_write,
        "a pooled connection out and back (connect, close)": pool_round,
    }
    for name, stage in stages.items():
        if name != "call_log_write":
            stage()
    row = LLMCall.objects.filter(feature="bench-llm").order_by("-created_at").first()
    assert row is not None
    record.update({f.attname: getattr(row, f.attname) for f in LLMCall._meta.concrete_fields})

    samples: dict[str, list[float]] = {name: [] for name in stages}
    names = list(stages)
    for index in range(args.warmup + args.calls):
        random.shuffle(names)
        for name in names:
            started = time.perf_counter()
            stages[name]()
            if index >= args.warmup:
                samples[name].append((time.perf_counter() - started) * 1000)

    print(f"proxy stages in-process, {args.calls} calls each; load {os.getloadavg()}")
    print(f"circuit breaker state: {'Redis' if os.environ.get('REDIS_URL') else 'in-process'}")
    for name in stages:
        ordered = sorted(samples[name])
        p99 = ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]
        print(f"{name:<42} p50 {statistics.median(ordered):7.3f}  p99 {p99:7.3f}")


if __name__ == "__main__":
    main()
