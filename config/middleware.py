"""Middleware that pages need and the API does not, skipped for API requests.

Services call `/api/` and `/llm/v1/` with a bearer key: no session, no CSRF token, no signed-in
user, no flash messages, no htmx, no static files, no sign-in form for axes to throttle. Each middleware below is Django's (or the
package's) own class, and does exactly what it did, for every other path; for API paths it hands
the request straight on. Measured with `bench/api_submit.py --profile-stages`: they cost a submit
about 0.3 ms of CPU (bench/README.md). The response headers every path gets (security, CSP,
X-Frame-Options, the request id) come from middleware that stays on for all.
"""

from __future__ import annotations

from typing import Any

from axes.middleware import AxesMiddleware as _Axes
from django.contrib.auth.middleware import AuthenticationMiddleware as _Authentication
from django.contrib.messages.middleware import MessageMiddleware as _Messages
from django.contrib.sessions.middleware import SessionMiddleware as _Sessions
from django.http import HttpRequest
from django.middleware.csrf import CsrfViewMiddleware as _Csrf
from django_htmx.middleware import HtmxMiddleware as _Htmx
from whitenoise.middleware import WhiteNoiseMiddleware as _WhiteNoise

from foundation.unavailable import API_PREFIXES


class _PagesOnly:
    """Mixed in before the middleware class: API requests skip it (sync or async chain alike,
    since the next handler's result, a response or an awaitable, is returned as it is)."""

    get_response: Any

    def __call__(self, request: HttpRequest) -> Any:
        if request.path_info.startswith(API_PREFIXES):
            return self.get_response(request)
        return super().__call__(request)  # type: ignore[misc]


class WhiteNoiseMiddleware(_PagesOnly, _WhiteNoise):
    pass


class SessionMiddleware(_PagesOnly, _Sessions):
    pass


class CsrfViewMiddleware(_PagesOnly, _Csrf):
    """process_view still runs (Django calls it directly); API views are all csrf_exempt."""


class AuthenticationMiddleware(_PagesOnly, _Authentication):
    pass


class HtmxMiddleware(_PagesOnly, _Htmx):
    pass


class MessageMiddleware(_PagesOnly, _Messages):
    pass


class AxesMiddleware(_PagesOnly, _Axes):
    """Turns a locked-out sign-in (`/login/`, `/admin/login/`) into its 429 page; nothing on the
    API signs in with a password, so nothing there is ever locked out."""
