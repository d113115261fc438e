"""Which pages may open the live queue's websocket: an Origin check on scheme, host and port.

Browsers send the page's origin with a websocket handshake and do not apply the same-origin
policy to websockets, so a page elsewhere could otherwise open one with the reviewer's cookie.
An origin is accepted when it is exactly (scheme, host, port) one of:

1. the socket's own origin: the Host the browser connected to (which must pass ALLOWED_HOSTS,
   as for HTTP) with http for ws and https for wss — or for ws behind a TLS proxy that says
   https through SECURE_PROXY_SSL_HEADER, as Django reads request.is_secure();
2. SITE_URL's origin;
3. an entry of CSRF_TRUSTED_ORIGINS, with Django's semantics: `https://*.example.com` accepts
   subdomains of example.com on that scheme.

So a page on another port or scheme of the same host is refused unless named there. A missing or
`null` Origin is refused: browsers always send one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from channels.security.websocket import WebsocketDenier
from django.conf import settings
from django.http.request import split_domain_port, validate_host

Origin = tuple[str, str, int]
DEFAULT_PORTS = {"http": 80, "https": 443}


def parse_origin(text: str) -> Origin | None:
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or DEFAULT_PORTS[parts.scheme]


def _header(scope: dict[str, Any], name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return bytes(value).decode("latin1")
    return None


def _own_origin(scope: dict[str, Any]) -> Origin | None:
    host = _header(scope, b"host")
    if not host:
        return None
    domain, _ = split_domain_port(host)
    if not domain or not validate_host(domain, settings.ALLOWED_HOSTS):
        return None
    secure = scope.get("scheme") == "wss"
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if proxy and not secure:
        name = proxy[0].removeprefix("HTTP_").lower().replace("_", "-").encode()
        secure = (_header(scope, name) or "").split(",")[0].strip() == proxy[1]
    return parse_origin(("https://" if secure else "http://") + host)


def _trusted(origin: Origin, patterns: Iterable[str]) -> bool:
    scheme, host, port = origin
    for pattern in patterns:
        if "://*." in pattern:
            wanted_scheme, _, rest = pattern.partition("://*.")
            parsed = parse_origin(f"{wanted_scheme}://{rest}")
            if (
                parsed is not None
                and scheme == parsed[0]
                and port == parsed[2]
                and host.endswith("." + parsed[1])
            ):
                return True
        elif parse_origin(pattern) == origin:
            return True
    return False


def origin_allowed(scope: dict[str, Any]) -> bool:
    origin = parse_origin(_header(scope, b"origin") or "")
    if origin is None:
        return False
    return origin == _own_origin(scope) or _trusted(
        origin, [settings.SITE_URL, *settings.CSRF_TRUSTED_ORIGINS]
    )


class SiteOriginValidator:
    """ASGI middleware in front of the websocket routes: refuse the handshake (403) when the
    Origin is not one of the site's own."""

    def __init__(self, application: Any) -> None:
        self.application = application

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if not origin_allowed(scope):
            return await WebsocketDenier()(scope, receive, send)
        return await self.application(scope, receive, send)
