"""The app's URLs plus one view that fails unexpectedly, with credentials in its exception."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from config.urls import urlpatterns as app_urlpatterns

CRASH_MESSAGE_SECRET = "crash-secret-value-8f3a2b1c9d"


def crash(request: HttpRequest) -> HttpResponse:
    raise RuntimeError(
        f"unexpected: token={CRASH_MESSAGE_SECRET} header={request.headers.get('Authorization')}"
    )


urlpatterns = [path("crash/", crash), *app_urlpatterns]
