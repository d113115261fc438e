"""ASGI entry point: `uvicorn config.asgi:application`.

HTTP goes to Django, except MCP under /mcp (mcpgate.asgi: streamable HTTP, long waits) and
the long poll `GET /api/v1/proposals/{id}?wait=` (approvals.longpoll: Django's synchronous
handler in one thread hop, then the wait on the event loop);
websockets (the live reviewer queue) go to Channels, behind a check of the Origin header's
scheme, host and port against the site's origins (approvals/origins.py) and Django's session
authentication. The lifespan starts and stops MCP.
"""

from __future__ import annotations

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

# Django must be set up before anything imports models.
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from approvals import longpoll  # noqa: E402
from approvals.origins import SiteOriginValidator  # noqa: E402
from approvals.routing import websocket_urlpatterns  # noqa: E402
from mcpgate import asgi as mcp  # noqa: E402


def websocket_application() -> SiteOriginValidator:
    """Origin must be one of the site's (settings read per handshake); then the session sets
    scope["user"]."""
    return SiteOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns)))


application = ProtocolTypeRouter(
    {
        "http": mcp.mount(longpoll.mount(django_asgi_app)),
        "websocket": websocket_application(),
        "lifespan": mcp.lifespan,
    }
)
