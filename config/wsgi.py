"""WSGI entry point: the Procfile's `web:` (`granian --interface wsgi config.wsgi:application`).

Pages and the API are sync views: served from WSGI worker threads they skip Django's ASGI
handler, which cost about 3x the throughput of the submit (issue 16, bench/README.md).
Websockets, `?wait=` long polls and `/mcp` go to the ASGI process (`live:`, config/asgi.py);
deploy/nginx.conf routes them on one origin. A whole response goes to the server as a list of
one bytes object (GatehouseWSGIHandler below, bench/README.md "Helper lean, fifth session").
"""

from __future__ import annotations

import logging
import os
from typing import Any

import django
from django.core.handlers.wsgi import WSGIHandler

from config.postgres.base import open_pool

log = logging.getLogger("gatehouse.wsgi")

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# A pooled connection for each request thread (the Procfile's --blocking-threads), open before
# the worker takes its first request: a burst at start-up finds them ready (config/env.py).
os.environ.setdefault("DB_POOL_MIN", os.environ.get("WEB_THREADS", "8"))


class GatehouseWSGIHandler(WSGIHandler):
    """Django's handler, with a whole (not streaming) response handed to the server as a list.

    granian writes a list as the whole body at once (`response_bytes`, granian/wsgi.py), where
    any other iterable (Django's HttpResponse) goes to `response_iter` and is iterated and
    closed from the server's side. So a whole response is closed here, as the server would
    close it after the body (request_finished: the database connection goes back to the pool),
    and its bytes go out as a list of one. A failure while closing is logged, as the server
    would log it, and the answer still goes out. Streaming and file responses are handed over
    as before, and the server closes them after their last chunk.
    """

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        response = super().__call__(environ, start_response)
        if getattr(response, "streaming", True):
            return response  # StreamingHttpResponse, FileResponse, wsgi.file_wrapper
        body: bytes = response.content  # type: ignore[attr-defined]  # not streaming: HttpResponse
        try:
            response.close()
        except Exception:
            log.exception("closing the response of %s failed", environ.get("PATH_INFO"))
        return [body]


django.setup(set_prefix=False)  # as django.core.wsgi.get_wsgi_application does
application = GatehouseWSGIHandler()
open_pool(timeout=10)
