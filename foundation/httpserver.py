"""The HTTP server of Gatehouse's loopback stand-ins (the simulated model provider of `make run`,
the tests' fake provider, Slack and OTLP receiver).

A client that closes a kept-alive connection with a reset (an HTTP pool torn down as its process
stops) makes `http.server` print the reset's traceback to stderr, which reads as a failure in a
benchmark's or the demo's output: such a server says nothing of it. Any other error is printed
as before.
"""

from __future__ import annotations

import sys
from http.server import ThreadingHTTPServer
from typing import Any

# What a peer that has gone away raises in the handler's read or write.
PEER_GONE = (ConnectionResetError, BrokenPipeError)


class LoopbackHTTPServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], PEER_GONE):
            return
        super().handle_error(request, client_address)
