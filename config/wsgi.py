"""WSGI entry point: the Procfile's `web:` (`granian --interface wsgi config.wsgi:application`).

Pages and the API are sync views: served from WSGI worker threads they skip Django's ASGI
handler, which cost about 3x the throughput of the submit (issue 16, bench/README.md).
Websockets, `?wait=` long polls and `/mcp` go to the ASGI process (`live:`, config/asgi.py);
deploy/nginx.conf routes them on one origin.
"""

from __future__ import annotations

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

application = get_wsgi_application()
