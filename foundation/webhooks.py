"""Outgoing webhooks per Standard Webhooks (https://www.standardwebhooks.com/).

Each request carries `webhook-id` (the receiver's idempotency key, the same on every retry),
`webhook-timestamp` (seconds, fresh per attempt) and `webhook-signature`: `v1,` + base64
HMAC-SHA256 over `id.timestamp.body` with the base64 key of a `whsec_…` secret; during a rotation
one signature per secret, space-separated. Targets are resolved once, checked against private,
loopback and link-local ranges, and the connection goes to the checked address (no DNS rebinding).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import json
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
from django.conf import settings

from foundation import retrying

USER_AGENT = "Gatehouse-Webhooks/1"
RESPONSE_EXCERPT_CHARS = 2000
_MAX_BODY_BYTES = 64 * 1024


class EgressRefused(Exception):
    """The target is not one Gatehouse may call."""


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix("whsec_"))


def sign(*, secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """One `v1,<base64>` signature."""
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def encode(body: dict[str, Any]) -> bytes:
    """The exact bytes sent; stable for one body, so a retry carries the same payload."""
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def signed_headers(
    *, secrets: Iterable[str], msg_id: str, body: bytes, timestamp: int | None = None
) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    signatures = [sign(secret=s, msg_id=msg_id, timestamp=ts, body=body) for s in secrets if s]
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(ts),
        "webhook-signature": " ".join(signatures),
        "content-type": "application/json",
        "user-agent": USER_AGENT,
    }


_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: IPv4 in the low 32 bits
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215 local-use: the site's own
_IPV4_COMPATIBLE = ipaddress.ip_network("::/96")  # deprecated ::a.b.c.d


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one carries (mapped, compatible, NAT64, 6to4), if any."""
    embedded = ip.ipv4_mapped or ip.sixtofour
    if embedded is None and (ip in _NAT64 or ip in _IPV4_COMPATIBLE):
        embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return embedded


def _is_public(address: str) -> bool:
    """Public: a global unicast address, and for an IPv6 address that carries an IPv4 one
    (mapped, compatible, NAT64, 6to4), the embedded IPv4 address is public too — a gateway on
    the way would otherwise deliver to it. Teredo and local-use NAT64 are refused outright."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL or ip.teredo is not None:
            return False
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            return _is_public(str(embedded)) and (ip.ipv4_mapped is not None or ip.is_global)
    return ip.is_global and not ip.is_multicast


def _describe(address: str) -> str:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    embedded = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    return f"{address}, which carries {embedded}" if embedded is not None else address


def url_problem(url: str) -> str | None:
    """Why a webhook, callback or provider URL would be refused at send time, checked when it
    is saved (admin, `apply`, commands); None when it may be used. A name that does not resolve
    now is accepted: it is resolved and checked again on every send."""
    try:
        resolve_target(url)
    except EgressRefused as exc:
        if str(exc).startswith("cannot resolve"):
            return None
        return str(exc)
    return None


def resolve_target(url: str) -> tuple[str, str]:
    """The URL to connect to (host replaced by a checked address) and the original host.

    Raises EgressRefused for a non-http(s) URL, a name that does not resolve, or an address on
    a private, loopback, link-local or otherwise non-public network unless
    GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS is on.
    """
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise EgressRefused(f"not an http(s) URL: {url!r}")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise EgressRefused(f"cannot resolve {host!r}: {exc}") from None
    addresses = [str(info[4][0]) for info in infos]
    if not settings.GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS:
        private = [a for a in addresses if not _is_public(a)]
        if private:
            raise EgressRefused(
                f"{host!r} resolves to a private, loopback or link-local address "
                f"({_describe(private[0])}); "
                "set GATEHOUSE_ALLOW_PRIVATE_WEBHOOKS=1 to allow that in development"
            )
    address = addresses[0]
    netloc = f"[{address}]" if ":" in address else address
    if parts.port:
        netloc += f":{parts.port}"
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), host


@dataclass(frozen=True)
class Response:
    status_code: int
    excerpt: str
    retry_after: float | None


_client: httpx.Client | None = None


def _http() -> httpx.Client:
    global _client
    if _client is None:
        # No redirects: a 3xx is a failed delivery, and following one would skip the egress check.
        _client = httpx.Client(follow_redirects=False, trust_env=False)
    return _client


def post(*, url: str, body: bytes, headers: dict[str, str], timeout: float) -> Response:
    """POST within `timeout` seconds overall. Raises EgressRefused or httpx.HTTPError."""
    target, host = resolve_target(url)
    parts = urlsplit(url)
    request_headers = {**headers, "host": parts.netloc.rsplit("@", 1)[-1]}
    deadline = time.monotonic() + timeout
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    with _http().stream(
        "POST",
        target,
        content=body,
        headers=request_headers,
        timeout=httpx.Timeout(timeout),
        extensions=extensions,
    ) as response:
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size >= _MAX_BODY_BYTES:
                break
            if time.monotonic() > deadline:
                raise httpx.ReadTimeout(f"no complete response within {timeout:g}s")
        text = b"".join(chunks).decode("utf-8", errors="replace")
        return Response(
            status_code=response.status_code,
            excerpt=text[:RESPONSE_EXCERPT_CHARS],
            retry_after=retrying.retry_after(response.headers),
        )


def backoff(attempt: int, *, retry_after: float | None = None) -> timedelta:
    """Delay before attempt `attempt + 1` of a delivery: `retrying.backoff_seconds` between
    EXECUTION_RETRY_BASE and EXECUTION_RETRY_MAX, at least Retry-After."""
    return timedelta(
        seconds=retrying.backoff_seconds(
            attempt,
            base=settings.EXECUTION_RETRY_BASE.total_seconds(),
            cap=settings.EXECUTION_RETRY_MAX.total_seconds(),
            retry_after=retry_after,
        )
    )
