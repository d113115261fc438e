"""The proxy's requests go straight from here to their view, past the rest of the stack.

`/llm/v1/chat/completions` and `/llm/v1/models` are called by services with a bearer key, on
every model call, so Django's URL resolving and the middleware after this one (all of which hand
an API request on untouched, or only add a header) were a fixed cost on each (bench/README.md,
llm_overhead). This middleware sits after those every path needs (request id, security headers,
CSP) and, for the proxy's own paths, does what the skipped ones would have done to its requests
and responses: the Host check, `resolver_match` (for traces), the 503 for a backing service that
is away, `X-Frame-Options` and `Content-Length`. Every other path, `/llm/v1/` included, goes down
the stack as before. Django's test client, the ASGI server and the WSGI server all run it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, ResolverMatch, resolve

from foundation.unavailable import answer_unavailable

PREFIX = "/llm/v1/"
# path -> its match, once resolved: the proxy's paths take no arguments, so a match is the same
# for every request to its path.
_matches: dict[str, ResolverMatch] = {}


def _match(path: str) -> ResolverMatch | None:
    match = _matches.get(path)
    if match is None:
        try:
            match = resolve(path)
        except Resolver404:
            return None
        if match.args or match.kwargs or not (match.url_name or "").startswith("proxy-"):
            return None
        _matches[path] = match
    return match


class ProxyDispatchMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> Any:
        path = request.path_info
        match = _match(path) if path.startswith(PREFIX) else None
        if match is None:
            return self.get_response(request)
        request.get_host()  # DisallowedHost (400) for a Host not in ALLOWED_HOSTS, as before
        request.resolver_match = match
        try:
            response: HttpResponseBase = match.func(request)
        except Exception as exc:
            unavailable = answer_unavailable(request, exc)
            if unavailable is None:
                raise  # Django's handler answers it: logged, handler500
            response = unavailable
        if "X-Frame-Options" not in response:
            response["X-Frame-Options"] = settings.X_FRAME_OPTIONS.upper()
        if not response.streaming and "Content-Length" not in response:
            response["Content-Length"] = str(len(response.content))  # type: ignore[attr-defined]
        return response
