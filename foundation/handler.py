"""Django's WSGI handler, with the model-call proxy's paths served past the middleware chain.

`config.wsgi.application` (the Procfile's `web:`) is this handler. Every request goes through
Django's WSGIHandler as before, except the paths of `LEAN_PREFIXES` that foundation.dispatch
would hand straight to their view (`POST /llm/v1/chat/completions`, `GET /llm/v1/models`): for
those it does, in one function, what Django's handler and the middleware above
DirectDispatchMiddleware do, and nothing else:

- request_started / request_finished with their receivers as Django sends them (the database
  connection goes back to the pool when the response is closed, the caches are closed), the
  script prefix and the urlconf, the WSGIRequest;
- RequestIdMiddleware: the request id (from a sane X-Request-ID or new) on every log line of the
  request and in the X-Request-ID header;
- SecurityMiddleware, its own `process_request` (the HTTPS redirect) and `process_response`
  (HSTS, nosniff, Referrer-Policy, COOP);
- BackingServiceMiddleware: the 503 problem for a backing service that is away (in `serve`);
- ContentSecurityPolicyMiddleware: the policy unless the view set one;
- DirectDispatchMiddleware's `serve`: the Host check (400), `resolver_match`, X-Frame-Options,
  Content-Length;
- any other exception answered by Django's own `response_for_exception` (logged as
  django.request does, got_request_exception sent, handler500), and a 4xx/5xx answer logged by
  `log_response` as Django's handler logs it.

The chain is only skipped while MIDDLEWARE above DirectDispatchMiddleware is exactly the one
listed in `_ABOVE` (a middleware added there, such as OpenTelemetry's, sends every request
through the chain) and while traces are off (the Django instrumentation's span is made by its
middleware). Everything else (pages, the API, other /llm/v1/ paths) is Django's handler's.
bench/README.md ("Helper lean, fifth session") has what it saves.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import signals
from django.core.handlers.exception import response_for_exception
from django.core.handlers.wsgi import WSGIHandler, get_path_info, get_script_name
from django.http import HttpRequest, HttpResponse
from django.middleware.security import SecurityMiddleware
from django.urls import set_script_prefix, set_urlconf
from django.utils.log import log_response

from foundation import dispatch
from telemetry import logs, tracing

# The middleware the lean path stands in for, in MIDDLEWARE's order, up to the dispatch.
_ABOVE = (
    "telemetry.middleware.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "foundation.unavailable.BackingServiceMiddleware",
    "approvals.middleware.ContentSecurityPolicyMiddleware",
    "foundation.dispatch.DirectDispatchMiddleware",
)
# The model-call proxy: services call it on every model call.
LEAN_PREFIXES = ("/llm/v1/",)


def _unused(request: HttpRequest) -> HttpResponse:  # pragma: no cover - never called
    raise AssertionError("SecurityMiddleware's hooks are called one by one")


class GatehouseWSGIHandler(WSGIHandler):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lean = tuple(settings.MIDDLEWARE[: len(_ABOVE)]) == _ABOVE
        self.security = SecurityMiddleware(_unused)
        self.policy = settings.CONTENT_SECURITY_POLICY

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        raw_path = environ.get("PATH_INFO", "")
        if not (self.lean and raw_path.startswith(LEAN_PREFIXES)) or tracing.enabled():
            return super().__call__(environ, start_response)
        path = get_path_info(environ)
        found = dispatch.route(path)
        if found is None:
            return super().__call__(environ, start_response)
        set_script_prefix(get_script_name(environ))
        signals.request_started.send(sender=self.__class__, environ=environ)
        request = self.request_class(environ)
        match = dispatch.direct_match(request, path, found[1])
        response: Any
        if match is None:  # no view of its own, or CSRF protection has its say: the chain
            response = self.get_response(request)
        else:
            set_urlconf(settings.ROOT_URLCONF)
            response = self._lean(request, match)
            response._resource_closers.append(request.close)
            if response.status_code >= 400:
                log_response(
                    "%s: %s",
                    response.reason_phrase,
                    request.path,
                    response=response,
                    request=request,
                )
        response._handler_class = self.__class__
        status = f"{response.status_code} {response.reason_phrase}"
        headers = [
            *response.items(),
            *(("Set-Cookie", c.output(header="")) for c in response.cookies.values()),
        ]
        start_response(status, headers)
        return response

    def _lean(self, request: Any, match: Any) -> Any:
        """RequestId, Security, BackingService, CSP and the dispatch, as the chain runs them."""
        rid = logs.sanitize_request_id(request.META.get("HTTP_X_REQUEST_ID"))
        request.request_id = rid
        token = logs.request_id.set(rid)
        response: Any
        try:
            try:
                response = self.security.process_request(request)
                if response is None:
                    try:
                        response = dispatch.serve(request, match)
                    except Exception as exc:
                        response = response_for_exception(request, exc)
                    if "Content-Security-Policy" not in response:
                        response["Content-Security-Policy"] = self.policy
                response = self.security.process_response(request, response)
            except Exception as exc:
                response = response_for_exception(request, exc)
        finally:
            logs.request_id.reset(token)
        response["X-Request-ID"] = rid
        return response
