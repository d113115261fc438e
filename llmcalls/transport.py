"""A lean HTTP/1.1 client for the requests to model providers (llmcalls.client).

httpx2's transport (h11's state machine, httpcore2's pool, headers and body written apart) cost
0.8 ms more per request than a kept-alive http.client connection on this machine
(bench/README.md). This sends each POST the way the standard library's http.client does at its
leanest — the request line, the headers and the body built as one bytes object and written in
one send — and reads the answer with http.client's own parser (status line, headers, chunked
and content-length bodies). The answer is handed back as an `httpx2.Response` whose stream reads
that parser, so the rest of llmcalls (errors.ProviderStatus, Retry-After, gzip/deflate decoding)
sees exactly what httpx2 gave it (a stream's events are read from `Body` itself when there is
nothing to decode: llmcalls.client._body); failures are raised as httpx2's own exceptions
(ConnectError, ConnectTimeout, ReadTimeout, WriteError, RemoteProtocolError …), as httpcore2
maps them, so llmcalls.errors classifies them unchanged.

What it keeps of httpx2's transport:
- one pool per provider origin, bounded (at most `max_connections` open, `max_idle` kept, each
  idle for at most `keepalive_expiry` seconds: httpx2's limits), safe across threads, LIFO reuse
  of kept-alive connections; a connection is put back only when its answer was read to the end
  and the provider did not say it would close it;
- an idle connection the provider closed (or that has bytes nobody asked for) is found before
  it is used: the socket is polled for readability with a zero timeout, as httpcore
  (`is_socket_readable`) and urllib3 (`is_connection_dropped`) do; and if the first write on a
  reused connection fails before any byte of the request left, the request goes once on a new
  connection (a provider can close between the poll and the write);
- TLS with the pooled httpx2 client's own SSL context (the same verification and CA settings,
  SSL_CERT_FILE/SSL_CERT_DIR included), server name checked;
- the per-attempt timeout: connect within `connect`, every read and write within `read`;
- a client span per request with the W3C trace context injected, as HTTPX2ClientInstrumentor
  makes it (only when tracing is on).

llmcalls.client uses it only where it can stand in for httpx2: http/https URLs that no
environment proxy (HTTP_PROXY/HTTPS_PROXY/ALL_PROXY, NO_PROXY) applies to; everything else, and
every request when LLM_LEAN_HTTP is off, goes through httpx2 as before.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx2

from telemetry import tracing


class _Retry(Exception):
    """The first write on a reused connection failed before any byte of the request left."""


class Network:
    """The socket of an open answer, as httpx2's `network_stream` extension shows it (the
    stream watchdog shuts it down at the deadline)."""

    __slots__ = ("sock",)

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def get_extra_info(self, name: str) -> Any:
        return self.sock if name == "socket" else None


def _dropped(sock: socket.socket) -> bool:
    """True when an idle connection cannot carry a request: the provider closed it (EOF is
    readable) or sent something unasked. A zero-timeout poll, as httpcore and urllib3 do."""
    try:
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return True
        poller = select.poll()
        poller.register(sock, select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


class Pool:
    """Kept-alive connections to one origin (scheme, host, port)."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None,
        max_connections: int,
        max_idle: int,
        keepalive_expiry: float = 5.0,
    ) -> None:
        self.scheme = scheme
        self.host = host
        self.port = port
        self.ssl_context = ssl_context
        self.max_connections = max_connections
        self.max_idle = max_idle
        self.keepalive_expiry = keepalive_expiry
        self._reset()

    def _reset(self) -> None:
        self._idle: list[tuple[socket.socket, float]] = []  # (connection, idle since)
        self._open = 0
        self._cond = threading.Condition(threading.Lock())

    # --- connections -----------------------------------------------------------------------

    def _acquire(self, connect: float, pool: float) -> tuple[socket.socket, bool]:
        """An idle connection that is still open (reused: True), or a new one."""
        deadline = time.monotonic() + pool
        with self._cond:
            while True:
                while self._idle:
                    sock, since = self._idle.pop()
                    # Kept no longer than httpx2's keepalive_expiry: a connection a middlebox
                    # dropped without a word would otherwise hang until the read timeout.
                    if time.monotonic() - since < self.keepalive_expiry and not _dropped(sock):
                        return sock, True
                    self._open -= 1
                    _close(sock)
                if self._open < self.max_connections:
                    self._open += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise httpx2.PoolTimeout(
                        f"no connection to {self.host}:{self.port} free within {pool:g}s"
                    )
                self._cond.wait(left)
        try:
            return self._connect(connect), False
        except BaseException:
            self._forget()
            raise

    def _connect(self, timeout: float) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=timeout)
        except TimeoutError as exc:
            raise httpx2.ConnectTimeout(str(exc) or "timed out") from exc
        except OSError as exc:
            raise httpx2.ConnectError(str(exc)) from exc
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.ssl_context is not None:
                sock = self.ssl_context.wrap_socket(sock, server_hostname=self.host)
        except TimeoutError as exc:
            sock.close()
            raise httpx2.ConnectTimeout(str(exc) or "timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise httpx2.ConnectError(str(exc)) from exc
        return sock

    def _forget(self) -> None:
        with self._cond:
            self._open -= 1
            self._cond.notify()

    def release(self, sock: socket.socket) -> None:
        """Put back a connection whose answer was read whole."""
        with self._cond:
            if len(self._idle) < self.max_idle:
                self._idle.append((sock, time.monotonic()))
                self._cond.notify()
                return
            self._open -= 1
            self._cond.notify()
        _close(sock)

    def discard(self, sock: socket.socket) -> None:
        _close(sock)
        self._forget()

    def close(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
            self._open -= len(idle)
        for sock, _ in idle:
            _close(sock)

    # --- one request -----------------------------------------------------------------------

    def post(
        self,
        head: bytes,
        body: bytes,
        *,
        connect: float,
        read: float,
        url: str,
    ) -> httpx2.Response:
        """POST: `head` is the request line and headers up to (not including) Content-Length.
        The answer's body is left unread (read it or close it)."""
        if not tracing.enabled():
            return self._post(head, body, connect, read)
        return self._traced(head, body, connect, read, url)

    def _post(self, head: bytes, body: bytes, connect: float, read: float) -> httpx2.Response:
        data = b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
        for _ in range(2):
            sock, reused = self._acquire(connect, max(read, connect))
            try:
                return self._exchange(sock, reused, data, read)
            except _Retry:
                continue  # the provider had closed it: once more on a new connection
        raise AssertionError("unreachable: a new connection never asks for a retry")

    def _exchange(
        self, sock: socket.socket, reused: bool, data: bytes, read: float
    ) -> httpx2.Response:
        try:
            sock.settimeout(read)
            sent = 0
            try:
                sent = sock.send(data)
                if sent < len(data):
                    sock.sendall(memoryview(data)[sent:])
            except TimeoutError as exc:
                raise httpx2.WriteTimeout(str(exc) or "timed out") from exc
            except OSError as exc:
                if reused and not sent:  # nothing of it left: safe to send on a new connection
                    raise _Retry from exc
                raise httpx2.WriteError(str(exc)) from exc
            answer = http.client.HTTPResponse(sock, method="POST")
            try:
                answer.begin()
            except TimeoutError as exc:
                answer.close()
                raise httpx2.ReadTimeout(str(exc) or "timed out") from exc
            except http.client.RemoteDisconnected as exc:
                answer.close()
                raise httpx2.RemoteProtocolError(
                    "Server disconnected without sending a response."
                ) from exc
            except http.client.HTTPException as exc:
                answer.close()
                raise httpx2.RemoteProtocolError(f"{type(exc).__name__}: {exc}") from exc
            except OSError as exc:
                answer.close()
                raise httpx2.ReadError(str(exc)) from exc
        except BaseException:
            self.discard(sock)
            raise
        return httpx2.Response(
            answer.status,
            headers=answer.getheaders(),
            stream=Body(self, sock, answer),
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": answer.reason.encode("latin-1", "replace"),
                "network_stream": Network(sock),
            },
        )

    def _traced(
        self, head: bytes, body: bytes, connect: float, read: float, url: str
    ) -> httpx2.Response:
        # The span HTTPX2ClientInstrumentor makes (its default, pre-stable semantic conventions):
        # named by the method, a CLIENT span around sending the request and reading the answer's
        # head, its context sent to the provider in `traceparent`.
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        tracer = trace.get_tracer("gatehouse.llmcalls.transport")
        attributes = {"http.method": "POST", "http.url": url}
        with tracer.start_as_current_span(
            "POST", kind=SpanKind.CLIENT, attributes=attributes, record_exception=True
        ) as span:
            carrier: dict[str, str] = {}
            propagate.inject(carrier)
            extra = b"".join(
                b"%s: %s\r\n" % (k.encode("latin-1"), v.encode("latin-1"))
                for k, v in carrier.items()
            )
            try:
                response = self._post(head + extra, body, connect, read)
            except Exception as exc:
                span.set_attribute("error.type", type(exc).__qualname__)
                raise
            span.set_attribute("http.status_code", response.status_code)
            if response.status_code >= 400:
                span.set_status(Status(StatusCode.ERROR))
            return response


class Body(httpx2.SyncByteStream):
    """An answer's body as it arrives, through http.client's parser; the connection goes back to
    the pool when it was read to the end and may stay open, else it is closed."""

    def __init__(self, pool: Pool, sock: socket.socket, answer: http.client.HTTPResponse) -> None:
        self._pool = pool
        self._sock: socket.socket | None = sock
        self._answer = answer
        self._whole = False

    def __iter__(self) -> Iterator[bytes]:
        answer = self._answer
        received = 0
        try:
            while True:
                chunk = answer.read1(65536)
                if not chunk:
                    break
                received += len(chunk)
                yield chunk
        except TimeoutError as exc:
            raise httpx2.ReadTimeout(str(exc) or "timed out") from exc
        except http.client.IncompleteRead as exc:  # h11's words, as httpx2 said it
            raise httpx2.RemoteProtocolError(
                "peer closed connection without sending complete message body "
                "(incomplete chunked read)"
            ) from exc
        except http.client.HTTPException as exc:
            raise httpx2.RemoteProtocolError(f"{type(exc).__name__}: {exc}") from exc
        except (OSError, ValueError) as exc:  # ValueError: read after the watchdog shut it
            raise httpx2.ReadError(str(exc) or type(exc).__name__) from exc
        if not answer.chunked and answer.length:  # http.client's read1 ends short silently
            raise httpx2.RemoteProtocolError(
                "peer closed connection without sending complete message body "
                f"(received {received} bytes, expected {received + answer.length})"
            )
        self._whole = True

    def drain(self, timeout: float, limit: int = 65536) -> None:
        """Read what is left of a body whose content the caller has whole already (a stream past
        its `[DONE]`: the chunked body's last, empty chunk), so that `close()` gives the
        connection back to the pool instead of closing it; the next request to the provider
        then skips a new connection (a TCP, and for https a TLS, handshake). Anything but a
        clean end within `timeout` and `limit` bytes leaves the connection to be closed."""
        sock, answer = self._sock, self._answer
        if sock is None or self._whole:
            return
        try:
            sock.settimeout(timeout)
            while limit > 0:
                chunk = answer.read1(limit)
                if not chunk:
                    break
                limit -= len(chunk)
            else:
                return
        except (OSError, ValueError, http.client.HTTPException):
            return
        if answer.chunked or not answer.length:
            self._whole = True

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is None:
            return
        answer = self._answer
        keep = self._whole and not answer.will_close
        answer.close()
        if keep:
            self._pool.release(sock)
        else:
            self._pool.discard(sock)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()


def head(method: str, target: bytes, headers: Mapping[str, str] | list[tuple[str, str]]) -> bytes:
    """The request line and headers (no Content-Length, no blank line) for `Pool.post`. Raises
    ValueError for a header that cannot go on the wire as it is (CR, LF or NUL in it)."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    lines = [b"%s %s HTTP/1.1\r\n" % (method.encode("ascii"), target)]
    for name, value in items:
        raw_name, raw_value = name.encode("latin-1"), value.encode("latin-1")
        if any(c in raw_name + raw_value for c in (b"\r", b"\n", b"\0")) or b":" in raw_name:
            raise ValueError(f"header {name!r} cannot be sent as it is")
        lines.append(b"%s: %s\r\n" % (raw_name, raw_value))
    return b"".join(lines)


_pools: dict[tuple[str, str, int, int], Pool] = {}
_pools_lock = threading.Lock()


def pool_for(
    url: httpx2.URL,
    ssl_context: ssl.SSLContext | None,
    *,
    max_connections: int,
    max_idle: int,
    keepalive_expiry: float,
) -> Pool:
    """The pool for the URL's origin (one per SSL context: one per pooled httpx2 client)."""
    port = url.port or (443 if url.scheme == "https" else 80)
    key = (url.scheme, url.host, port, id(ssl_context))
    found = _pools.get(key)
    if found is None:
        with _pools_lock:
            found = _pools.get(key)
            if found is None:
                found = _pools[key] = Pool(
                    url.scheme,
                    url.host,
                    port,
                    ssl_context=ssl_context,
                    max_connections=max_connections,
                    max_idle=max_idle,
                    keepalive_expiry=keepalive_expiry,
                )
    return found


def close_all() -> None:
    """Close every idle connection (tests; a forked child starts with none)."""
    with _pools_lock:
        pools = list(_pools.values())
        _pools.clear()
    for pool in pools:
        pool.close()


def _forked() -> None:
    # A child process must not share its parent's sockets (granian forks its workers): every
    # pool (llmcalls.client keeps references to them) starts empty, with fresh locks.
    global _pools_lock
    _pools_lock = threading.Lock()
    for pool in _pools.values():
        pool._reset()


os.register_at_fork(after_in_child=_forked)
