from __future__ import annotations

from django.conf import settings
from django.contrib import admin
from django.urls import include, path

from approvals.api import api
from config import health
from telemetry.views import metrics_view

urlpatterns = [
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics_view, name="metrics"),
    path("api/v1/", api.urls),
    path("admin/", admin.site.urls),
    path("llm/", include("llmcalls.urls")),
    path("evals/", include("evals.urls")),
    path("insights/", include("insights.urls")),
    path("", include("approvals.urls")),
]

if settings.BENCH_FLOOR_ENDPOINT:
    from config import bench_floor

    urlpatterns.append(path("bench/floor", bench_floor.floor))
