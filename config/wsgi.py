"""WSGI entry point: the Procfile's `web:` (`granian --interface wsgi config.wsgi:application`).

Pages and the API are sync views: served from WSGI worker threads they skip Django's ASGI
handler, which cost about 3x the throughput of the submit (issue 16, bench/README.md).
Websockets, `?wait=` long polls and `/mcp` go to the ASGI process (`live:`, config/asgi.py);
deploy/nginx.conf routes them on one origin.
"""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

from config.postgres.base import open_pool

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
# A pooled connection for each request thread (the Procfile's --blocking-threads), open before
# the worker takes its first request: a burst at start-up finds them ready (config/env.py).
os.environ.setdefault("DB_POOL_MIN", os.environ.get("WEB_THREADS", "8"))

application = get_wsgi_application()
open_pool(timeout=10)
