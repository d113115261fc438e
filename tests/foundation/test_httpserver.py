"""The loopback stand-ins' HTTP server is quiet about a client that resets its connection, and
still prints any other error."""

from __future__ import annotations

import http.client
import socket
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler

import pytest

from foundation.httpserver import LoopbackHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/boom":
            raise RuntimeError("the handler failed")
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"ok")


@contextmanager
def serving() -> Iterator[LoopbackHTTPServer]:
    server = LoopbackHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def get(server: LoopbackHTTPServer, path: str, *, reset: bool) -> int:
    """One request on a kept-alive connection, then the connection dropped: with `reset`, by
    a TCP reset (SO_LINGER 0), as a pool torn down mid-connection does. Returns the status."""
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(str(host), int(port), timeout=5)
    connection.request("GET", path)
    response = connection.getresponse()
    response.read()
    if reset:
        assert connection.sock is not None
        connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    connection.close()
    return response.status


def test_a_client_that_resets_its_kept_alive_connection_prints_nothing(
    capfd: pytest.CaptureFixture[str],
) -> None:
    with serving() as server:  # server_close() joins the handlers' threads
        for _ in range(5):
            assert get(server, "/", reset=True) == 200
    assert capfd.readouterr().err == ""


def test_any_other_error_is_still_printed(capfd: pytest.CaptureFixture[str]) -> None:
    # The handler answers nothing: the client sees the connection closed.
    with serving() as server, pytest.raises(http.client.RemoteDisconnected):
        get(server, "/boom", reset=False)
    err = capfd.readouterr().err
    assert "Exception occurred during processing of request" in err
    assert "RuntimeError: the handler failed" in err
