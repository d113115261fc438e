from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.templatetags.static import static
from django.urls import include, path

from approvals.api import api
from config import health
from foundation.unavailable import handler500 as handler500
from telemetry.views import metrics_view


def favicon(request: HttpRequest) -> HttpResponse:
    # Browsers ask every page's origin for /favicon.ico (the admin and the API docs too).
    return redirect(static("favicon.svg"), permanent=True)


urlpatterns = [
    path("favicon.ico", favicon),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", api.urls),
    path("admin/", admin.site.urls),
    path("llm/", include("llmcalls.urls")),
    path("evals/", include("evals.urls")),
    path("insights/", include("insights.urls")),
    path("", include("notify.urls")),
    path("", include("approvals.urls")),
]

if settings.BENCH_FLOOR_ENDPOINT:
    from config import bench_floor

    urlpatterns.append(path("bench/floor", bench_floor.floor))
