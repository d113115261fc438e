"""Sign-in throttling (django-axes), shared by `/login/` and `/admin/login/`.

After LOGIN_FAILURE_LIMIT failed sign-ins for one username, or from one client address, further
attempts for it are refused with 429 and a page that says why, for LOGIN_LOCKOUT (the right
password included), or until an admin deletes the access attempts (Admin → Axes) or runs
`manage.py axes_reset_username NAME` / `axes_reset_ip ADDRESS`.
"""

from __future__ import annotations

from typing import Any

from axes.backends import AxesStandaloneBackend
from django.conf import settings
from django.http import HttpRequest


class LoginThrottleBackend(AxesStandaloneBackend):
    """Axes' check, for sign-ins that come with a request (every HTTP form does). A call to
    `authenticate()` without one (a shell, `Client.login` in tests) has no client to count and
    passes on to the model backend."""

    def authenticate(
        self,
        request: HttpRequest | None,
        username: str | None = None,
        password: str | None = None,
        **kwargs: Any,
    ) -> None:
        if request is None:
            return None
        return super().authenticate(request, username, password, **kwargs)


def client_address(request: HttpRequest) -> str | None:
    """The address to count failures against: the peer, or behind the TLS proxy (which appends
    the address it saw to X-Forwarded-For) the last entry — earlier ones the client can forge."""
    if settings.SECURE_PROXY_SSL_HEADER:
        forwarded = request.META.get("HTTP_X_FORWARDED_FOR", "")
        if forwarded.strip():
            return forwarded.split(",")[-1].strip()
    return request.META.get("REMOTE_ADDR")
