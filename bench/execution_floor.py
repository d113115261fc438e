"""The floor task for bench/execution.py: the same signed POST from a Celery task, no database.

Loaded into the benchmark's worker with `--include bench.execution_floor`; never in production.
"""

from __future__ import annotations

import httpx

from config.celery import app

# One client per worker process, as foundation.webhooks keeps: a fair floor reuses connections.
_client = httpx.Client(trust_env=False)


@app.task(name="bench.floor_post", ignore_result=True)
def floor_post(url: str, body: str, headers: dict[str, str]) -> int:
    return _client.post(url, content=body.encode(), headers=headers, timeout=10).status_code
