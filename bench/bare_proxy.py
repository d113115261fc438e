"""The bare proxy floor for bench/llm_overhead.py: the thinnest honest proxy in front of the provider.

A WSGI application, served by llm_overhead.py as Gatehouse is (granian WSGI, the same workers and
threads): `POST /v1/<path>` forwards the request body as it came to `UPSTREAM` + `/<path>` over a
kept-alive HTTP/1.1 connection of the worker thread (http.client, one per thread), and returns the
provider's status, content type and body; a streamed answer (chunked) is passed on chunk by chunk
as the provider sends it. No authentication, routing, log or breaker: what the hardware and the
server allow a proxy, so what Gatehouse's stack costs beyond it is the difference.

    BARE_PROXY_UPSTREAM=http://127.0.0.1:PORT/bench/v1 python -m granian --interface wsgi \\
        bare_proxy:application ...          (cwd bench/)
"""

from __future__ import annotations

import http.client
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urlsplit

UPSTREAM = urlsplit(os.environ.get("BARE_PROXY_UPSTREAM", "http://127.0.0.1:18350/bench/v1"))
_local = threading.local()


def _connection() -> http.client.HTTPConnection:
    conn = getattr(_local, "conn", None)
    if conn is None:
        host = UPSTREAM.hostname or "127.0.0.1"
        conn = _local.conn = http.client.HTTPConnection(host, UPSTREAM.port, timeout=30)
    return conn


def _forward(path: str, body: bytes) -> http.client.HTTPResponse:
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    for attempt in (1, 2):
        conn = _connection()
        try:
            conn.request("POST", UPSTREAM.path + path, body, headers)
            return conn.getresponse()
        except (http.client.HTTPException, OSError):
            conn.close()  # a kept-alive connection the provider closed: one new one
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _chunks(response: http.client.HTTPResponse) -> Iterator[bytes]:
    while chunk := response.read1(65536):
        yield chunk


def application(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "")
    if path == "/healthz":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    if environ["REQUEST_METHOD"] != "POST" or not path.startswith("/v1/"):
        start_response("404 Not Found", [("Content-Length", "0")])
        return []
    body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    response = _forward(path[3:], body)
    status = f"{response.status} {response.reason}"
    content_type = response.getheader("Content-Type", "application/json")
    if response.getheader("Transfer-Encoding", "").lower() == "chunked":
        start_response(status, [("Content-Type", content_type)])
        return _chunks(response)
    data = response.read()
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(data)))])
    return [data]
