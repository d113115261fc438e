"""GET /metrics: the Prometheus text format, behind `Authorization: Bearer $METRICS_TOKEN`.

Off (404) while METRICS_TOKEN is unset. With PROMETHEUS_MULTIPROC_DIR set, the counters and
histograms of every process on this machine are added up from their files; the gauges of
telemetry.metrics.SCRAPE_GAUGES are read from the database now, one query each.
"""

from __future__ import annotations

import logging
import os
import secrets
from collections.abc import Iterator
from typing import Any

from django.apps import apps
from django.conf import settings
from django.http import Http404, HttpRequest, HttpResponse
from django.utils.module_loading import import_string
from django.views.decorators.http import require_GET
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from telemetry import metrics

log = logging.getLogger("gatehouse.metrics")


class ScrapeGauges(Collector):
    """Reads SCRAPE_GAUGES from the database at scrape time; a failing query is skipped (and
    logged), so one broken gauge never hides the others."""

    def collect(self) -> Iterator[Metric]:
        families = {
            name: GaugeMetricFamily(name, help_text, labels=list(labels))
            for name, (help_text, labels) in metrics.SCRAPE_GAUGES.items()
        }
        for path in metrics.SCRAPE_QUERIES:
            if not apps.is_installed(path.partition(".")[0]):
                continue  # an optional app left out
            try:
                samples = import_string(path)()
            except Exception:
                log.exception("metrics: %s failed", path)
                continue
            for name, label_values, value in samples:
                families[name].add_metric([str(v) for v in label_values], float(value))
        yield from families.values()


def registry() -> Any:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        collected = CollectorRegistry()
        multiprocess.MultiProcessCollector(collected)
    else:
        collected = CollectorRegistry()
        collected.register(_ProcessMetrics())
    collected.register(ScrapeGauges())
    return collected


class _ProcessMetrics(Collector):
    """This process's own counters (one process only: no PROMETHEUS_MULTIPROC_DIR)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def _authorized(request: HttpRequest) -> bool:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    return scheme.lower() == "bearer" and secrets.compare_digest(
        token.strip().encode(), settings.METRICS_TOKEN.encode()
    )


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    if not settings.METRICS_TOKEN:
        raise Http404
    if not _authorized(request):
        response = HttpResponse(
            "A valid metrics token is required.\n", status=401, content_type="text/plain"
        )
        response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    return HttpResponse(generate_latest(registry()), content_type=CONTENT_TYPE_LATEST)
