"""The benchmark floor: parse the same JSON and insert one row, on the same server and database.

Mounted only when BENCH_FLOOR_ENDPOINT is on (bench/api_submit.py turns it on).
"""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from approvals.models import AuditEvent


@csrf_exempt
@require_POST
def floor(request: HttpRequest) -> HttpResponse:
    body = json.loads(request.body)
    event = AuditEvent.objects.create(kind="bench.floor", actor="bench", data=body)
    return HttpResponse(json.dumps({"id": event.pk}), status=201, content_type="application/json")
