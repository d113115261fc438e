"""WSGI entry point: the Procfile's `web:` (`granian --interface wsgi config.wsgi:application`).

Pages and the API are sync views: served from WSGI worker threads they skip Django's ASGI
handler, which cost about 3x the throughput of the submit (issue 16, bench/README.md).
Websockets, `?wait=` long polls and `/mcp` go to the ASGI process (`live:`, config/asgi.py);
deploy/nginx.conf routes them on one origin. The handler is Django's, except for the model-call
proxy's paths, which foundation/handler.py serves past the middleware chain with what it gives
them.
"""

from __future__ import annotations

import os

import django

from config.postgres.base import open_pool

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# A pooled connection for each request thread (the Procfile's --blocking-threads), open before
# the worker takes its first request: a burst at start-up finds them ready (config/env.py).
os.environ.setdefault("DB_POOL_MIN", os.environ.get("WEB_THREADS", "8"))

django.setup(set_prefix=False)  # as django.core.wsgi.get_wsgi_application does

from foundation.handler import GatehouseWSGIHandler  # noqa: E402 (needs the apps loaded)

# Django's WSGIHandler, the model-call proxy's paths served past the middleware chain.
application = GatehouseWSGIHandler()
open_pool(timeout=10)
