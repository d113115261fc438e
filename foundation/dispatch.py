"""The machine-facing paths go from here straight to their view, past the rest of the stack.

Services call the model-call proxy (`/llm/v1/chat/completions`, `/llm/v1/models`) and the API
(`POST /api/v1/proposals` above all) with a bearer key, on every model call and every proposal.
The middleware after this one either hands such a request on untouched (config/middleware.py:
what only pages need) or only adds a header, and Django's URL resolving finds the same view for
the same path every time: a fixed cost on each request (bench/README.md: llm_overhead, and the
submit's stages). This middleware sits after those every path needs (request id, security
headers, the 503 for a backing service, CSP) and, for the paths of settings.DIRECT_DISPATCH
(path prefix -> the view names, `namespace:name`, that may be reached so), does what the skipped
ones would have done to their requests and responses: the Host check, `resolver_match` (for
traces), the 503 for a backing service that is away, `X-Frame-Options` and `Content-Length`.

Only a path whose view takes no arguments from the URL goes straight (its match is the same for
every request, so it is resolved once), and only when CSRF protection would let the request
through (the view is csrf_exempt, as every API operation is, or the method is safe); every other
request goes down the stack as before, and so does every path while CommonMiddleware has more to
do (DISALLOWED_USER_AGENTS, PREPEND_WWW).
Django's test client, the ASGI server and the WSGI server all run it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponseBase
from django.urls import Resolver404, ResolverMatch, resolve

from foundation.unavailable import answer_unavailable

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})
# path -> its match, once resolved (only arg-less views of DIRECT_DISPATCH are kept: bounded).
_matches: dict[str, ResolverMatch] = {}


def _match(path: str, view_names: tuple[str, ...]) -> ResolverMatch | None:
    match = _matches.get(path)
    if match is None:
        try:
            match = resolve(path)
        except Resolver404:
            return None
        if match.args or match.kwargs or not match.view_name.startswith(view_names):
            return None
        _matches[path] = match
    return match


class DirectDispatchMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], Any]) -> None:
        self.get_response = get_response
        self.routes = [(prefix, tuple(names)) for prefix, names in settings.DIRECT_DISPATCH.items()]

    def __call__(self, request: HttpRequest) -> Any:
        match = None
        # CommonMiddleware refuses or redirects by these before any view: it keeps its say.
        if not (settings.DISALLOWED_USER_AGENTS or settings.PREPEND_WWW):
            path = request.path_info
            for prefix, view_names in self.routes:
                if path.startswith(prefix):
                    match = _match(path, view_names)
                    break
        if match is None or not (
            getattr(match.func, "csrf_exempt", False) or request.method in _SAFE_METHODS
        ):
            return self.get_response(request)  # CsrfViewMiddleware.process_view has its say
        request.get_host()  # DisallowedHost (400) for a Host not in ALLOWED_HOSTS, as before
        request.resolver_match = match
        try:
            response: HttpResponseBase = match.func(request)
        except Exception as exc:
            unavailable = answer_unavailable(request, exc)
            if unavailable is None:
                raise  # Django's handler answers it: logged, handler500
            response = unavailable
        if "X-Frame-Options" not in response and not getattr(
            response, "xframe_options_exempt", False
        ):
            response["X-Frame-Options"] = settings.X_FRAME_OPTIONS.upper()
        if not response.streaming and "Content-Length" not in response:
            response["Content-Length"] = str(len(response.content))  # type: ignore[attr-defined]
        return response
