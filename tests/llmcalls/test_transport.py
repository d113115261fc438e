"""The lean HTTP/1.1 client for provider requests (llmcalls/transport.py): kept-alive pools, a
provider that closes idle connections, one write per request, truncated and gzipped bodies,
TLS verification, the pool's bound, and httpx2 kept for environment proxies."""

from __future__ import annotations

import datetime
import gzip
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest

from llmcalls import client, routing, services, transport
from llmcalls.models import LLMCall
from tests.llmcalls.fake_provider import FakeProvider

pytestmark = pytest.mark.django_db

MESSAGES = [{"role": "user", "content": "Is order 42 eligible for a refund?"}]
ANSWER = {
    "id": "chatcmpl-raw",
    "object": "chat.completion",
    "model": "ok",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Yes."}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1},
}


class Upstream:
    """A provider on a raw socket that records, per connection, each request whole and what its
    first read got; it answers ANSWER (or `body`), then keeps the connection, or closes it
    `close_after` seconds later (with a reset when `reset`) without saying so."""

    def __init__(
        self,
        *,
        close_after: float | None = None,
        reset: bool = False,
        body: bytes | None = None,
        extra: bytes = b"",
        length: int | None = None,
        tls: ssl.SSLContext | None = None,
        events: list[bytes] | None = None,
        end: bool = True,
    ) -> None:
        # events: answer a server-sent event stream, one chunk each, ended by the empty chunk
        # unless `end` is false (then the connection stays silent after them).
        self.events = events
        self.end = end
        self.close_after = close_after
        self.reset = reset
        self.body = body if body is not None else json.dumps(ANSWER).encode()
        self.extra = extra
        self.length = length
        self.tls = tls
        self.connections: list[list[tuple[bytes, bytes]]] = []  # (first read, whole request)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def url(self, scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/v1"

    def requests(self) -> list[bytes]:
        return [whole for conn in self.connections for _, whole in conn]

    def stop(self) -> None:
        self._stop = True
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        if self.tls is not None:
            try:
                conn = self.tls.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                conn.close()
                return
        seen: list[tuple[bytes, bytes]] = []
        self.connections.append(seen)
        try:
            while True:
                first = conn.recv(65536)
                if not first:
                    return
                data = first
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                head, _, rest = data.partition(b"\r\n\r\n")
                size = int(
                    next(
                        line.split(b":", 1)[1]
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    )
                )
                while len(rest) < size:
                    rest += conn.recv(65536)
                seen.append((first, data[: len(head) + 4] + rest))
                if self.events is not None:
                    conn.sendall(
                        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                        b"Transfer-Encoding: chunked\r\n\r\n"
                        + b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in self.events)
                    )
                    if self.end:
                        conn.sendall(b"0\r\n\r\n")
                    continue
                length = self.length if self.length is not None else len(self.body)
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    + self.extra
                    + b"Content-Length: %d\r\n\r\n" % length
                    + self.body
                )
                if self.close_after is not None:
                    time.sleep(self.close_after)
                    if self.reset:
                        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
                    return
        except OSError:
            return
        finally:
            conn.close()


@pytest.fixture
def upstreams() -> Iterator[list[Upstream]]:
    made: list[Upstream] = []
    yield made
    for upstream in made:
        upstream.stop()


@pytest.fixture
def route(fake: FakeProvider, db: None) -> Any:
    def make(base_url: str, **options: Any) -> None:
        services.provider_upsert(name="raw", base_url=base_url, api_key_env="")
        services.route_upsert(
            feature="support",
            targets=[("raw", "ok")],
            deadline=timedelta(seconds=options.get("deadline", 3)),
            attempt_timeout=None,
            cache_ttl=None,
            daily_budget_usd=None,
            over_budget="refuse",
            params={},
        )
        routing.forget()

    return make


def test_calls_share_one_kept_alive_connection_and_each_request_is_one_write(
    route: Any, upstreams: list[Upstream]
) -> None:
    upstreams.append(upstream := Upstream())
    route(upstream.url())
    for _ in range(3):
        assert client.complete(feature="support", messages=MESSAGES).text == "Yes."
    [requests] = upstream.connections
    assert len(requests) == 3
    for first, whole in requests:
        assert first == whole  # the request line, headers and body arrived in one piece
        head, _, body = whole.partition(b"\r\n\r\n")
        assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
        lines = {
            k.lower(): v.strip() for k, _, v in (h.partition(b":") for h in head.split(b"\r\n")[1:])
        }
        assert lines[b"host"] == b"127.0.0.1:%d" % upstream.port
        assert lines[b"authorization"] == b"Bearer not-needed"
        assert lines[b"accept-encoding"] == b"gzip, deflate"  # as httpx2 asked
        assert lines[b"content-type"] == b"application/json"
        assert json.loads(body) == {"model": "ok", "messages": MESSAGES}


def _events(content: str = "Yes.", end: bytes = b"\n") -> list[bytes]:
    """One chunk holding `content` (as it is: JSON need not escape non-ASCII) and [DONE], each
    line ended by `end`."""
    chunk = {
        "id": "chatcmpl-raw",
        "object": "chat.completion.chunk",
        "model": "ok",
        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": "stop"}],
    }
    data = json.dumps(chunk, ensure_ascii=False).encode()
    return [b"data: " + data + end + end, b"data: [DONE]" + end + end]


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "httpx2"])
def test_a_stream_read_to_its_done_gives_its_connection_back_for_the_next_call(
    route: Any, upstreams: list[Upstream], settings: Any, lean: bool
) -> None:
    settings.LLM_LEAN_HTTP = lean
    upstreams.append(upstream := Upstream(events=_events()))
    route(upstream.url())
    for _ in range(3):
        with client.stream(feature="support", messages=MESSAGES) as stream:
            assert "".join(delta.text for delta in stream) == "Yes."
    [requests] = upstream.connections  # one connection for the three streams
    assert len(requests) == 3
    assert LLMCall.objects.filter(status="ok", stream=True).count() == 3


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "httpx2"])
def test_a_stream_whose_end_does_not_follow_its_done_ends_at_once_on_a_closed_connection(
    route: Any, upstreams: list[Upstream], settings: Any, lean: bool
) -> None:
    settings.LLM_LEAN_HTTP = lean
    upstreams.append(upstream := Upstream(events=_events(), end=False))
    route(upstream.url(), deadline=10)
    started = time.monotonic()
    for _ in range(2):
        with client.stream(feature="support", messages=MESSAGES) as stream:
            assert "".join(delta.text for delta in stream) == "Yes."
    # Each waited for the body's end no longer than the drain's bound, then closed it.
    assert time.monotonic() - started < 2 * client._DRAIN_SECONDS + 1
    assert [len(c) for c in upstream.connections] == [1, 1]
    assert LLMCall.objects.filter(status="ok", stream=True).count() == 2


@pytest.mark.parametrize("lean", [True, False], ids=["lean", "httpx2"])
def test_a_streamed_chunk_holding_line_separators_as_they_are_arrives_whole(
    route: Any, upstreams: list[Upstream], settings: Any, lean: bool
) -> None:
    # JSON may carry U+2028, U+2029 and U+0085 unescaped; only CR and LF end an event's line.
    settings.LLM_LEAN_HTTP = lean
    text = "one\u2028two\u2029three\x85four"
    upstreams.append(upstream := Upstream(events=_events(text, end=b"\r\n")))
    route(upstream.url())
    with client.stream(feature="support", messages=MESSAGES) as stream:
        assert "".join(delta.text for delta in stream) == text
    assert LLMCall.objects.get(status="ok").response_text == text


def test_a_connection_the_provider_closed_while_idle_is_not_used(
    route: Any, upstreams: list[Upstream]
) -> None:
    upstreams.append(upstream := Upstream(close_after=0.02))
    route(upstream.url())
    first = client.complete(feature="support", messages=MESSAGES)
    time.sleep(0.2)  # the provider has closed the kept-alive connection meanwhile
    second = client.complete(feature="support", messages=MESSAGES)
    assert [len(c) for c in upstream.connections] == [1, 1]
    for result in (first, second):  # no failed attempt, no retry
        row = LLMCall.objects.get(id=result.call_id)
        assert (row.status, row.attempts) == ("ok", 1), row.attempt_log


def test_a_reused_connection_whose_first_write_fails_sends_the_request_once_on_a_new_one(
    route: Any, upstreams: list[Upstream], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The provider resets the connection between the idle check and the write.
    monkeypatch.setattr(transport, "_dropped", lambda sock: False)
    upstreams.append(upstream := Upstream(close_after=0.02, reset=True))
    route(upstream.url())
    client.complete(feature="support", messages=MESSAGES)
    time.sleep(0.2)
    second = client.complete(feature="support", messages=MESSAGES)
    row = LLMCall.objects.get(id=second.call_id)
    assert (row.status, row.attempts) == ("ok", 1), row.attempt_log
    assert [len(c) for c in upstream.connections] == [1, 1]  # sent once, on the new connection


def test_a_body_cut_short_of_its_content_length_is_a_protocol_error_never_an_answer(
    route: Any, upstreams: list[Upstream], settings: Any
) -> None:
    settings.LLM_MAX_RETRIES = 0
    body = json.dumps(ANSWER).encode()
    upstreams.append(upstream := Upstream(body=body, length=len(body) + 50, close_after=0))
    route(upstream.url())
    with pytest.raises(client.AllModelsFailed):
        client.complete(feature="support", messages=MESSAGES)
    [attempt] = LLMCall.objects.get(feature="support").attempt_log
    assert attempt["detail"] == (
        "RemoteProtocolError: peer closed connection without sending complete message body "
        f"(received {len(body)} bytes, expected {len(body) + 50})"
    )


def test_a_gzipped_answer_is_decoded(route: Any, upstreams: list[Upstream]) -> None:
    packed = gzip.compress(json.dumps(ANSWER).encode())
    upstreams.append(upstream := Upstream(body=packed, extra=b"Content-Encoding: gzip\r\n"))
    route(upstream.url())
    assert client.complete(feature="support", messages=MESSAGES).text == "Yes."


def test_the_pool_is_bounded_and_a_request_waits_for_a_free_connection_until_its_timeout(
    upstreams: list[Upstream],
) -> None:
    upstreams.append(upstream := Upstream())
    pool = transport.Pool(
        "http", "127.0.0.1", upstream.port, ssl_context=None, max_connections=1, max_idle=1
    )
    head = transport.head("POST", b"/v1/chat/completions", [("Host", "x")])
    held = pool.post(head, b"{}", connect=1, read=1, url="")
    started = time.monotonic()
    with pytest.raises(httpx2.PoolTimeout):
        pool.post(head, b"{}", connect=0.2, read=0.2, url="")
    assert 0.2 <= time.monotonic() - started < 1
    held.read()
    held.close()  # read whole: back to the pool, and the next request reuses it
    reused = pool.post(head, b"{}", connect=0.2, read=0.2, url="")
    reused.read()
    reused.close()
    assert [len(c) for c in upstream.connections] == [2]
    pool.keepalive_expiry = 0.05  # an idle connection older than this is not used again
    time.sleep(0.1)
    pool.post(head, b"{}", connect=0.2, read=0.2, url="").close()
    assert [len(c) for c in upstream.connections] == [2, 1]
    pool.close()


def _certificate(tmp_path: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test provider")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_https_verifies_the_certificate_with_the_httpx2_clients_own_context(
    route: Any, upstreams: list[Upstream], settings: Any, tmp_path: Path
) -> None:
    settings.LLM_MAX_RETRIES = 0
    cert, key = _certificate(tmp_path)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    upstreams.append(upstream := Upstream(tls=server))
    route(upstream.url("https"))
    with pytest.raises(client.AllModelsFailed):  # a certificate nobody vouches for
        client.complete(feature="support", messages=MESSAGES)
    [attempt] = LLMCall.objects.get(feature="support").attempt_log
    assert attempt["detail"].startswith("ConnectError: ")
    assert "CERTIFICATE_VERIFY_FAILED" in attempt["detail"]
    provider = client._clients[(upstream.url("https"), "not-needed")]
    [(pool, _)] = [lean for lean in provider.lean.values() if lean is not None]
    context = provider.client._transport._pool._ssl_context  # type: ignore[attr-defined]
    assert pool.ssl_context is context and context is not None
    context.load_verify_locations(cert)  # now the client trusts it: the lean path takes it
    assert client.complete(feature="support", messages=MESSAGES).text == "Yes."
    assert len(upstream.requests()) == 1


def test_an_environment_proxy_is_used_through_httpx2_and_no_proxy_goes_direct(
    route: Any, upstreams: list[Upstream], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    upstreams.append(proxy := Upstream())  # answers as the provider would through it
    upstreams.append(provider := Upstream())
    monkeypatch.setenv("HTTP_PROXY", proxy.url())
    route(provider.url())
    assert client.complete(feature="support", messages=MESSAGES).text == "Yes."
    [through] = proxy.requests()
    assert through.startswith(b"POST %s/chat/completions HTTP/1.1" % provider.url().encode())
    assert provider.requests() == []

    upstreams.append(direct := Upstream())
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    route(direct.url())
    assert client.complete(feature="support", messages=MESSAGES).text == "Yes."
    [first, whole] = direct.connections[0][0]
    assert whole.startswith(b"POST /v1/chat/completions HTTP/1.1") and first == whole
    assert len(proxy.requests()) == 1
