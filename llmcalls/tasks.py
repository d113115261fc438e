"""Celery tasks of llmcalls: each calls one service function."""

from __future__ import annotations

from config.celery import app
from llmcalls import services


@app.task(name="llmcalls.purge_call_text")
def purge_call_text() -> int:
    return services.call_text_purge()
