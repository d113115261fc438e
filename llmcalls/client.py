"""Every model call goes through here: `complete()` and `stream()`.

A call follows its feature's route (llmcalls.routing):

0. Semantic cache (when the route has semantic_cache, llmcalls.semcache): the last user message
   is embedded (a call of its own: logged, budgeted, within the deadline) and a close enough
   answer, approved if the route asks for that, ends the call at zero cost.
1. Budget: if the calling service has spent the feature's daily budget, refuse, or (over_budget:
   next-model) drop
   the first model and go on with the later, cheaper ones, marking the call `over_budget`.
2. For each provider/model of the route, in order:
   a. exact cache (when the route has cache_ttl): a hit ends the call at zero cost;
   b. circuit breaker: an open circuit skips the target;
   c. attempts: retry connection errors, timeouts, 408/409/429/5xx with exponential backoff and
      equal jitter, at least the provider's Retry-After (foundation.retrying), as long as the
      wait fits in the deadline;
      other failures (bad key, unknown model, malformed answer) go straight to the next target;
      a request the provider calls invalid (400/413/422) fails the call, since every model would
      refuse it.
3. One deadline covers all of this; each attempt gets what is left of it, or at most the
   route's attempt_timeout, so that a model that hangs is retried or left for the next one
   while there is still time.
4. Whatever happens, one LLMCall row records it (llmcalls.services.call_log_write), before the
   call returns; except that a caller may take a successful call's row to write it later
   (`complete(log_later=True)`: the proxy writes it once the answer is sent, llmcalls.proxy).

Streams fall back only until the first token arrives; after that a broken stream is an error
(StreamCut) for the caller and in the log, never a short success.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import heapq
import itertools
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.utils import timezone

from foundation import ids, jsonfast, retrying
from llmcalls import routing, semcache, services, transport
from llmcalls.breaker import breaker
from llmcalls.errors import (
    FATAL,
    RETRY,
    AllModelsFailed,
    BudgetExceeded,
    DeadlineExceeded,
    EarlyEnd,
    LLMError,
    Malformed,
    Misconfigured,
    NoRoute,
    ProviderStatus,
    RequestRefused,
    StreamCut,
    classify,
    describe,
)
from llmcalls.routing import Target
from telemetry import logs

try:  # the openai SDK's own transport (httpx2 since openai 3; httpx before)
    import httpx2 as _http
except ImportError:  # pragma: no cover
    import httpx as _http  # type: ignore[no-redef]

logger = logging.getLogger("llmcalls")

__all__ = [
    "AllModelsFailed",
    "BudgetExceeded",
    "Completion",
    "CompletionStream",
    "DeadlineExceeded",
    "Delta",
    "LLMError",
    "NoRoute",
    "RequestRefused",
    "StreamCut",
    "complete",
    "embed",
    "stream",
]


# --- errors (llmcalls.errors) ------------------------------------------------------------------


def _retry_after(exc: BaseException) -> float | None:
    """Seconds the provider asked us to wait (retry-after-ms / Retry-After), if it said."""
    response = getattr(exc, "response", None)
    if response is None:
        return None
    return retrying.retry_after(response.headers)


# --- results -------------------------------------------------------------------------------------


@dataclass
class Usage:
    input_tokens: int | None = None
    output_tokens: int | None = None
    cached_tokens: int | None = None

    @classmethod
    def from_openai(cls, usage: dict[str, Any] | None) -> Usage:
        if not usage:
            return cls()
        details = usage.get("prompt_tokens_details") or {}
        return cls(
            usage.get("prompt_tokens"), usage.get("completion_tokens"), details.get("cached_tokens")
        )


@dataclass
class Completion:
    call_id: uuid.UUID
    text: str
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str
    provider: str
    model: str
    usage: Usage
    cost_usd: Decimal | None
    cache_hit: bool
    latency_ms: float
    ttft_ms: float | None
    raw: dict[str, Any]  # the chat.completion as the provider sent it (or as it was cached)
    cache_kind: str = ""  # "exact" or "semantic" when cache_hit
    similarity: float | None = None  # of the question a semantic hit was answered for
    # complete(log_later=True): the call's row, not written yet; the caller writes it.
    log_pending: PendingLog | None = None


class PendingLog:
    """A successful call's row, built when the call ended and written later, exactly once.

    `write()` stores it as the call would have (services.call_log_write: the INSERT, or the
    record to the `llmcalls` logger if that fails; the metrics, log line and span), in the
    context the call ended in: its log line keeps the request's id and its span the request's
    trace. A second `write()` does nothing. One dropped unwritten leaves its record in the log.
    """

    def __init__(self, record: dict[str, Any]) -> None:
        self._record: dict[str, Any] | None = record
        self._context = contextvars.copy_context()

    def write(self) -> None:
        record, self._record = self._record, None
        if record is not None:
            self._context.run(services.call_log_write, record=record)

    def __del__(self) -> None:
        if self._record is not None:
            with contextlib.suppress(Exception):
                logger.error(
                    "llm call log row dropped before it was written; the record follows: %s",
                    json.dumps(self._record, default=str, ensure_ascii=False),
                )


@dataclass
class Embedding:
    call_id: uuid.UUID
    vector: list[float]
    provider: str
    model: str
    usage: Usage
    cost_usd: Decimal | None


@dataclass
class Delta:
    text: str
    tool_calls: list[dict[str, Any]] | None
    raw: dict[str, Any]  # the chat.completion.chunk


# --- the call ------------------------------------------------------------------------------------

_OUR_PARAMS = {"stream", "stream_options"}


class _Call:
    """The bookkeeping of one logical call, turned into one LLMCall row at the end."""

    def __init__(
        self,
        *,
        feature: str,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        deadline: float | timedelta | None,
        service: str,
        stream: bool,
        route: str | None = None,
    ) -> None:
        self.id = ids.uuid7()
        self.started = time.monotonic()
        self.created_at = timezone.now()
        self.feature = feature
        self.service = service
        self.stream = stream
        self.messages = messages
        config = routing.route_for(route or feature)
        if route and config is not None and config.feature != route:
            config = None  # an explicitly named route must exist; no fallback to `default`
        self.route = config
        self.route_name = route or feature
        # The route's parameters are the admin's: a caller may add others, never override them.
        self.params = {
            **{k: v for k, v in params.items() if k not in _OUR_PARAMS},
            **(config.params if config else {}),
        }
        if isinstance(deadline, timedelta):
            deadline = deadline.total_seconds()
        self.deadline = float(
            deadline if deadline is not None else config.deadline if config else 30.0
        )
        self.deadline_at = self.started + self.deadline
        self.attempt_timeout = config.attempt_timeout if config else None
        self.attempt_log: list[dict[str, Any]] = []
        self.path: list[str] = []
        self.over_budget = False
        self.logged = False
        self.semantic: semcache.Probe | None = None  # the route has a semantic cache
        self.served: semcache.Hit | None = None  # … and it answered

    def remaining(self) -> float:
        return self.deadline_at - time.monotonic()

    def note(self, target: Target, outcome: str, detail: str = "", started: float = 0.0) -> None:
        entry: dict[str, Any] = {"target": target.key, "outcome": outcome}
        if detail:
            entry["detail"] = detail
        if started:
            entry["ms"] = round((time.monotonic() - started) * 1000, 1)
        self.attempt_log.append(entry)

    def targets(self) -> tuple[Target, ...]:
        if self.route is None:
            raise NoRoute(
                f"No route named {self.route_name!r}"
                + ("" if self.route_name != self.feature else " and no route named 'default'")
                + ". Declare one in llm_routes or in the admin.",
                call_id=self.id,
            )
        if not self.route.targets:
            raise NoRoute(f"The route for {self.feature!r} lists no models.", call_id=self.id)
        targets = self.route.targets
        budget = self.route.daily_budget_usd
        if budget is not None:
            # Each service has the budget of its own: one cannot spend another's.
            spent = services.spent_today(feature=self.feature, service=self.service)
            if spent >= budget:
                if self.route.over_budget == "next-model" and len(targets) > 1:
                    logger.warning(
                        "feature %s (service %r) is over its daily budget ($%s of $%s); "
                        "using later models",
                        self.feature,
                        self.service,
                        spent,
                        budget,
                    )
                    self.over_budget = True
                    return targets[1:]
                whose = f" for service {self.service!r}" if self.service else ""
                raise BudgetExceeded(
                    f"Feature {self.feature!r} has spent ${spent:.4f}{whose} of its daily budget "
                    f"of ${budget}; calls are refused until 00:00 UTC.",
                    call_id=self.id,
                )
        return targets

    def cache_key(self, target: Target) -> str:
        # Provider-independent: the same model behind another provider shares the entry. Keyed
        # by the service too: one service never reads another's answers.
        body = json.dumps(
            [self.service, self.feature, target.model, self.params, self.messages],
            sort_keys=True,
            separators=(",", ":"),
            default=str,
        )
        return "llm:cache:v2:" + hashlib.sha256(body.encode()).hexdigest()

    def record(self, **values: Any) -> dict[str, Any]:
        record = {
            "id": self.id,
            "created_at": self.created_at,
            "feature": self.feature,
            "route": self.route.feature if self.route else self.route_name,
            "service": self.service,
            "stream": self.stream,
            "messages": self.messages,
            "params": self.params,
            "attempts": sum(1 for a in self.attempt_log if a["outcome"] in ("ok", "error")),
            "attempt_log": self.attempt_log,
            "fallback_path": self.path,
            "fell_back": len(self.path) > 1
            or any(a["outcome"] == "skipped" for a in self.attempt_log),
            "over_budget": self.over_budget,
            "latency_ms": round((time.monotonic() - self.started) * 1000, 3),
        }
        record.update(values)
        return record

    def log(self, **values: Any) -> None:
        if self.logged:
            return
        self.logged = True
        services.call_log_write(record=self.record(**values))

    def log_error(self, exc: BaseException, **values: Any) -> None:
        values.setdefault("error_class", type(exc).__name__)
        values.setdefault("error_message", logs.redact(str(exc))[:5000])
        status = "refused" if isinstance(exc, BudgetExceeded | NoRoute) else "error"
        self.log(status=status, **values)


_warned_unpriced: set[tuple[str, str]] = set()


def _cost(
    provider: str, model: str, usage: Usage
) -> tuple[Decimal | None, bool]:  # (cost, price missing)
    price = routing.price_for(provider=provider, model=model, on=timezone.now().date())
    if price is None:
        if (provider, model) not in _warned_unpriced:  # once per process; the log row says it too
            _warned_unpriced.add((provider, model))
            logger.warning("no price for %s/%s: the call's cost is unknown", provider, model)
        return None, True
    if usage.input_tokens is None and usage.output_tokens is None:
        return None, False
    return (
        price.cost(
            input_tokens=usage.input_tokens or 0,
            output_tokens=usage.output_tokens or 0,
            cached_tokens=usage.cached_tokens or 0,
        ),
        False,
    )


@dataclass
class _Answer:
    """What a target answered (or a cache replayed), however it arrived: whole or streamed."""

    text: str
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str
    usage: dict[str, Any] | None  # the provider's usage object, as sent
    raw: dict[str, Any]  # as a chat.completion
    request_id: str = ""
    response_model: str = ""
    ttft_ms: float | None = None


def _finish(
    call: _Call,
    target: Target,
    answer: _Answer,
    *,
    hit: bool,
    error: LLMError | None = None,
    later: bool = False,
) -> Completion | None:
    """End a call, whole or streamed: its usage and cost, the cache fill, one log record, and the
    Completion (None when `error` ended it: the record is then the error's, with what arrived).

    `later`: hand the record back in `Completion.log_pending` instead of writing it, unless the
    route has a daily budget (its sum must see every finished call before the next one starts).
    """
    usage = Usage() if hit else Usage.from_openai(answer.usage)
    cost, missing = (Decimal(0), False) if hit else _cost(target.provider, target.model, usage)
    fields: dict[str, Any] = {
        "provider": target.provider,
        "model": target.model,
        "response_text": answer.text,
        "tool_calls": answer.tool_calls,
        "finish_reason": answer.finish_reason,
        "cache_hit": hit,
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "cached_tokens": usage.cached_tokens,
        "cost_usd": cost,
        "price_missing": missing,
        "provider_request_id": answer.request_id,
        "ttft_ms": answer.ttft_ms,
    }
    served = call.served
    if served is not None:
        fields["cache_similarity"] = round(served.similarity, 6)
        fields["cache_source"] = served.source_call_id
        fields["cache_saved_usd"] = served.cost_usd
    if error is not None:
        call.log_error(error, **fields)
        return None
    if (
        not hit
        and call.route
        and call.route.cache_ttl
        and answer.finish_reason in ("stop", "tool_calls")
    ):
        # Only whole answers: not errors (we are past them), not truncated or filtered output.
        cache.set(call.cache_key(target), {"raw": answer.raw}, timeout=call.route.cache_ttl)
    record = call.record(status="ok", response_model=answer.response_model, **fields)
    call.logged = True
    pending = None
    if later and call.route is not None and call.route.daily_budget_usd is None:
        pending = PendingLog(record)
    else:
        services.call_log_write(record=record)
    if not hit and call.semantic is not None:
        _semantic_store(call, target, answer, cost)
    return Completion(
        call_id=call.id,
        text=answer.text,
        tool_calls=answer.tool_calls,
        finish_reason=answer.finish_reason,
        provider=target.provider,
        model=target.model,
        usage=usage,
        cost_usd=cost,
        cache_hit=hit,
        latency_ms=record["latency_ms"],
        ttft_ms=answer.ttft_ms,
        raw=answer.raw,
        cache_kind=("semantic" if served else "exact") if hit else "",
        similarity=served.similarity if served else None,
        log_pending=pending,
    )


# --- the semantic cache (llmcalls.semcache) ------------------------------------------------------


def _semantic_lookup(call: _Call) -> tuple[Target, semcache.Hit] | None:
    """Embed the question (a logged call of its own, within this call's deadline and budget) and
    look for an answer to serve. Any failure of the cache means a miss, never a failed call."""
    found = semcache.probe(
        route=call.route,
        service=call.service,
        feature=call.feature,
        params=call.params,
        messages=call.messages,
    )
    if found is None:
        return None
    call.semantic = found
    started = time.monotonic()
    try:
        embedding = embed(
            feature=call.feature,
            text=found.text,
            route=found.config.embedding_route,
            service=call.service,
            deadline=max(call.remaining(), 0.001),
        )
        found.vector = semcache.unit(embedding.vector)
        found.embedding_call_id = embedding.call_id
        hit = semcache.lookup(found)
    except (LLMError, ValueError) as exc:
        call.semantic = None
        call.attempt_log.append(
            {"target": "semantic-cache", "outcome": "unavailable", "detail": describe(exc)}
        )
        return None
    elapsed = round((time.monotonic() - started) * 1000, 1)
    if hit is None:
        call.attempt_log.append({"target": "semantic-cache", "outcome": "miss", "ms": elapsed})
        return None
    call.served = hit
    call.attempt_log.append(
        {
            "target": "semantic-cache",
            "outcome": "cache-hit",
            "detail": f"similarity {hit.similarity:.4f} to the question of call "
            f"{hit.source_call_id}",
            "ms": elapsed,
        }
    )
    return Target(hit.provider, "", "", hit.model), hit


def _semantic_store(call: _Call, target: Target, answer: _Answer, cost: Decimal | None) -> None:
    assert call.semantic is not None
    try:
        semcache.store(
            call.semantic,
            call_id=call.id,
            service=call.service,
            feature=call.feature,
            provider=target.provider,
            model=target.model,
            raw=answer.raw,
            cost_usd=cost,
        )
    except Exception:  # the answer is the caller's whatever happens to the cache
        logger.exception("semantic cache: storing the answer of call %s failed", call.id)


# --- embeddings ----------------------------------------------------------------------------------


def embed(
    *,
    feature: str,
    text: str,
    route: str | None = None,
    service: str = "",
    deadline: float | timedelta | None = None,
) -> Embedding:
    """One embedding along a route, logged, budgeted and retried like a completion (the same
    `route`/`feature` rules as complete()). Raises LLMError (logged) when none comes."""
    call = _Call(
        feature=feature,
        messages=[{"role": "user", "content": text}],
        params={},
        deadline=deadline,
        service=service,
        stream=False,
        route=route,
    )
    target, value, hit = _start(
        call, lambda target, budget: _attempt_embed(call, target, budget, text), semantic=False
    )
    data, request_id = value if not hit else (value["raw"], "")
    answer = _Answer(
        text="",
        tool_calls=None,
        finish_reason="",
        usage=data.get("usage"),
        raw=data,
        request_id=request_id,
        response_model=data.get("model") or target.model,
    )
    result = _finish(call, target, answer, hit=hit)
    assert result is not None
    return Embedding(
        call_id=call.id,
        vector=data["data"][0]["embedding"],
        provider=target.provider,
        model=target.model,
        usage=result.usage,
        cost_usd=result.cost_usd,
    )


def _attempt_embed(
    call: _Call, target: Target, budget: float, text: str
) -> tuple[dict[str, Any], str]:
    response = _post(
        target,
        "/embeddings",
        {"model": target.model, "input": text, "encoding_format": "float"},
        budget,
    )
    try:
        data = json.loads(response.content)
        vector = data["data"][0]["embedding"]
        if not vector or not all(isinstance(v, int | float) for v in vector):
            raise TypeError("not a list of numbers")
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise Malformed(f"not an embedding: {response.content[:200]!r}") from exc
    return data, response.headers.get("x-request-id", "")


# --- providers -----------------------------------------------------------------------------------

# The wire format of OpenAI-compatible providers, spoken directly: the request is one JSON
# document and the answer is kept as the provider sent it, so the SDK's request building and
# response models (about 1.8 ms a call on this machine, more than the rest of llmcalls together;
# bench/README.md) are skipped. Every request carries the call's own timeout.
# Where it can (an http/https URL no environment proxy applies to, LLM_LEAN_HTTP on), a request
# goes on llmcalls.transport: a lean HTTP/1.1 client, one kept-alive pool per provider origin,
# the request written in one send, the answer read by http.client's parser and handed back as an
# httpx2 Response (0.8 ms less a request than httpx2's transport; bench/README.md).
# Otherwise it goes through one pooled httpx2 client (the SDK's own transport, with the SDK's
# connection limits) per provider URL and key: to the client's transport for its URL (the pool,
# or the proxy the environment names) as the client would send it, without the client's
# per-request merging of URL, headers, cookies, auth and redirects.


@dataclass
class _Provider:
    client: _http.Client
    headers: _http.Headers  # what its requests carry: the client's defaults merged with ours
    # per (URL, extra headers): the lean pool and the request's head, or None for httpx2
    lean: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[transport.Pool, bytes] | None]


_clients: dict[tuple[str, str], _Provider] = {}
_clients_lock = threading.Lock()
_LIMITS = _http.Limits(max_connections=1000, max_keepalive_connections=100)


def _client(target: Target) -> _Provider:
    """The pooled client for the target's provider and the headers its requests carry."""
    api_key = "not-needed"
    if target.api_key_env:
        # Checked again here, not only at save: a row written around the checks (SQL, an old
        # release) must never send one of Gatehouse's own secrets to a provider.
        refused = services.api_key_env_problem(target.api_key_env)
        if refused:
            raise Misconfigured(f"provider {target.provider}: {refused}")
        api_key = os.environ.get(target.api_key_env, "")
        logs.register_secret(api_key)
        if not api_key:
            raise Misconfigured(
                f"provider {target.provider}: environment variable {target.api_key_env} is not set"
            )
    key = (target.base_url, api_key)
    found = _clients.get(key)
    if found is None:
        with _clients_lock:
            found = _clients.get(key)
            if found is None:
                # No retries, no redirects: our retries govern, within our deadline.
                headers = {
                    "Authorization": f"Bearer {api_key}",
                    "Content-Type": "application/json",
                    "Accept": "application/json",
                    "User-Agent": "gatehouse-llmcalls",
                }
                pooled = _http.Client(limits=_LIMITS, follow_redirects=False)
                merged = pooled.headers.copy()  # as build_request merges them
                merged.update(headers)
                found = _clients[key] = _Provider(pooled, merged, {})
    return found


def _lean(
    provider: _Provider, address: str, extra: tuple[tuple[str, str], ...]
) -> tuple[transport.Pool, bytes] | None:
    """The lean client's pool and the request's head for this URL, or None where httpx2 must
    send it: a scheme other than http/https, credentials in the URL, an environment proxy or a
    mount for the URL (httpx2's own choice, `_transport_for_url`), a header that cannot go on
    the wire as it is."""
    client = provider.client
    url = _http.URL(address)
    if url.scheme not in ("http", "https") or url.userinfo or not url.host:
        return None
    if client._transport_for_url(url) is not client._transport:
        return None
    context = None
    if url.scheme == "https":
        # The client's own SSL context: the same verification, CA and SSL_CERT_* settings.
        context = getattr(getattr(client._transport, "_pool", None), "_ssl_context", None)
        if context is None:
            return None
    headers = [("Host", url.netloc.decode("ascii"))]
    headers += [(k.decode("latin-1"), v.decode("latin-1")) for k, v in provider.headers.raw]
    for name, value in extra:  # replacing the common header of that name
        headers = [(k, v) for k, v in headers if k.lower() != name.lower()] + [(name, value)]
    try:
        head = transport.head("POST", url.raw_path, headers)
    except ValueError:
        return None
    pool = transport.pool_for(
        url,
        context,
        max_connections=_LIMITS.max_connections or 1000,
        max_idle=_LIMITS.max_keepalive_connections or 100,
        keepalive_expiry=_LIMITS.keepalive_expiry or 5.0,
    )
    return pool, head


_urls: dict[str, _http.URL] = {}


def _send(
    target: Target, path: str, body: dict[str, Any], budget: float, **headers: str
) -> _http.Response:
    """POST a JSON body to the provider; the response with its body unread (the caller reads or
    streams it, then closes it)."""
    provider = _client(target)
    address = _url(target, path)
    connect = min(budget, settings.LLM_CONNECT_TIMEOUT)
    if settings.LLM_LEAN_HTTP:
        extra = tuple(headers.items())
        key = (address, extra)
        try:
            lean = provider.lean[key]
        except KeyError:
            lean = provider.lean[key] = _lean(provider, address, extra)
        if lean is not None:
            pool, head = lean
            return pool.post(head, jsonfast.dumps(body), connect=connect, read=budget, url=address)
    url = _urls.get(address)
    if url is None:
        url = _urls[address] = _http.URL(address)
    common = provider.headers
    if headers:
        common = common.copy()
        common.update(headers)
    request = _http.Request(
        "POST",
        url,
        content=jsonfast.dumps(body),
        headers=common,
        extensions={"timeout": _http.Timeout(budget, connect=connect).as_dict()},
    )
    response = provider.client._transport_for_url(url).handle_request(request)
    response.request = request
    return response


def _url(target: Target, path: str) -> str:
    return target.base_url.rstrip("/") + path


def _post(target: Target, path: str, body: dict[str, Any], budget: float) -> _http.Response:
    """POST a JSON body to the provider; its answer, read whole, or ProviderStatus for an HTTP
    error (connection errors and timeouts are httpx2's own)."""
    response = _send(target, path, body, budget)
    try:
        response.read()
    finally:
        response.close()
    if response.status_code >= 400:
        raise ProviderStatus(response)
    return response


def _run(
    call: _Call,
    attempt: Callable[[Target, float], Any],
    from_cache: Callable[[Target, dict[str, Any]], Any],
) -> tuple[Target, Any, bool]:
    """Walk the route until one target answers; return (target, value, cache hit)."""
    targets = call.targets()
    needs_price = call.route is not None and call.route.daily_budget_usd is not None
    cache_ttl = call.route.cache_ttl if call.route else None
    circuits = breaker()
    last_error: BaseException | None = None
    for target in targets:
        if cache_ttl:
            entry = cache.get(call.cache_key(target))
            if entry is not None:
                call.note(target, "cache-hit")
                return target, from_cache(target, entry), True
        if (
            needs_price
            and routing.price_for(
                provider=target.provider, model=target.model, on=timezone.now().date()
            )
            is None
        ):
            call.note(target, "skipped", "no price for this model and the route has a budget")
            continue
        is_open, had_failures = circuits.check(target.key)
        if is_open:
            call.note(target, "skipped", "circuit open")
            continue
        call.path.append(target.key)
        for retry in range(settings.LLM_MAX_RETRIES + 1):
            remaining = call.remaining()
            if remaining <= 0:
                break
            budget = min(remaining, call.attempt_timeout or remaining)
            started = time.monotonic()
            try:
                value = attempt(target, budget)
            except Exception as exc:
                kind = classify(exc)
                call.note(target, "error", describe(exc), started)
                last_error = exc
                if kind == FATAL:
                    if isinstance(exc, ProviderStatus):
                        raise RequestRefused(
                            f"{target.key} refused the request: {describe(exc)}", call_id=call.id
                        ) from exc
                    raise
                circuits.failure(target.key)
                if kind != RETRY or retry == settings.LLM_MAX_RETRIES:
                    break
                wait = retrying.backoff_seconds(
                    retry + 1,
                    base=settings.LLM_BACKOFF_BASE,
                    cap=settings.LLM_BACKOFF_CAP,
                    retry_after=_retry_after(exc),
                )
                if wait >= call.remaining():
                    break  # the wait would not fit in the deadline: try the next target now
                time.sleep(wait)
                continue
            call.note(target, "ok", "", started)
            if had_failures:
                circuits.success(target.key)
            return target, value, False
        if call.remaining() <= 0:
            break
    if call.remaining() <= 0:
        raise DeadlineExceeded(
            f"No answer within the {call.deadline:g}s deadline "
            f"(tried {', '.join(call.path) or 'nothing'}; last: {describe(last_error)})",
            call_id=call.id,
        )
    raise AllModelsFailed(
        f"Every model of the route failed (last: {describe(last_error) or 'all skipped'})",
        call_id=call.id,
    )


def _start(
    call: _Call, attempt: Callable[[Target, float], Any], *, semantic: bool = True
) -> tuple[Target, Any, bool]:
    """Serve the call from the semantic cache or walk its route: (target, value, cache hit).
    Whatever stops the call is logged and raised. An embedding never asks the semantic cache."""
    try:
        served = _semantic_lookup(call) if semantic else None
        if served is not None:
            return served[0], {"raw": served[1].raw}, True
        return _run(call, attempt, lambda target, entry: entry)
    except BaseException as exc:
        call.log_error(exc)
        raise


# --- complete --------------------------------------------------------------------------------------


def complete(
    *,
    feature: str,
    messages: list[dict[str, Any]],
    deadline: float | timedelta | None = None,
    service: str = "",
    route: str | None = None,
    log_later: bool = False,
    **params: Any,
) -> Completion:
    """One chat completion along the feature's route. Raises LLMError (logged) when none comes.

    `route` names another route to follow (e.g. an eval trying several models); the call is
    still logged, and budgeted, under `feature`. `deadline` (seconds or a timedelta) overrides
    the route's. Other keyword arguments are request parameters (temperature, tools, …).
    `log_later`: a successful call on a route without a daily budget returns its row unwritten
    (`Completion.log_pending`), for the caller to write once it has passed the answer on; a
    failed call is logged before the error is raised, as always.
    """
    call = _Call(
        feature=feature,
        messages=messages,
        params=params,
        deadline=deadline,
        service=service,
        stream=False,
        route=route,
    )
    target, value, hit = _start(
        call, lambda target, budget: _attempt_complete(call, target, budget)
    )
    data, request_id = value if not hit else (value["raw"], "")
    choice = data["choices"][0]
    message = choice.get("message") or {}
    answer = _Answer(
        text=message.get("content") or "",
        tool_calls=message.get("tool_calls"),
        finish_reason=choice.get("finish_reason") or "",
        usage=data.get("usage"),
        raw=data,
        request_id=request_id,
        response_model=data.get("model") or target.model,
    )
    result = _finish(call, target, answer, hit=hit, later=log_later)
    assert result is not None  # no error: a result
    return result


def _attempt_complete(call: _Call, target: Target, budget: float) -> tuple[dict[str, Any], str]:
    # The caller's parameters go after model and messages, as the SDK's extra_body did.
    body = {"model": target.model, "messages": call.messages, **call.params}
    response = _post(target, "/chat/completions", body, budget)
    try:
        data = json.loads(response.content)
        data["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        raise Malformed(f"not a chat completion: {response.content[:200]!r}") from exc
    return data, response.headers.get("x-request-id", "")


# --- stream --------------------------------------------------------------------------------------


def stream(
    *,
    feature: str,
    messages: list[dict[str, Any]],
    deadline: float | timedelta | None = None,
    service: str = "",
    route: str | None = None,
    **params: Any,
) -> CompletionStream:
    """Start a streamed completion; iterate the result for Delta objects.

    Returns once the first token has arrived (falling back until then), so an error that stops
    the call before any output is raised here, not while iterating. The call is logged when the
    stream ends, breaks, or is closed by the caller.
    """
    call = _Call(
        feature=feature,
        messages=messages,
        params=params,
        deadline=deadline,
        service=service,
        stream=True,
        route=route,
    )
    target, value, hit = _start(call, lambda target, budget: _open_stream(call, target, budget))
    if hit:
        return CompletionStream(call, target, _Replay(value["raw"]), cache_hit=True)
    return CompletionStream(call, target, value, cache_hit=False)


_DONE = object()


# How long a stream's end may take to arrive after its [DONE] for the connection to be kept.
_DRAIN_SECONDS = 0.5


class _Live:
    """An open provider stream whose first chunks have been read already."""

    def __init__(self, response: _http.Response, watch: int) -> None:
        self.response = response
        self.body = _body(response)
        self.events = _sse(_lines(self.body))
        self.watch = watch
        self.buffered: list[dict[str, Any]] = []
        self.ttft: float | None = None
        self.request_id = response.headers.get("x-request-id", "")
        self.done = False  # the provider sent [DONE]

    def chunks(self) -> Iterator[dict[str, Any] | object]:
        yield from self.buffered
        for data in self.events:
            if data == b"[DONE]":
                self.done = True
                yield _DONE
                return
            yield _parse_chunk(data)

    def close(self) -> None:
        if self.done:
            self._drain()
        _watchdog.cancel(self.watch)
        try:
            self.response.close()
        except Exception:
            logger.debug("closing a provider stream failed", exc_info=True)

    def _drain(self) -> None:
        """Only the body's end is left after [DONE] (the chunked body's last, empty chunk): read
        it, within _DRAIN_SECONDS and 64 KiB, so that the connection goes back to the pool rather
        than being closed; anything else, and the connection is closed as before."""
        stream = self.response.stream
        if isinstance(stream, transport.Body):
            stream.drain(_DRAIN_SECONDS)  # (the deadline's watchdog still watches)
            return
        # httpx2's transport reads with the attempt's timeout: a watch of its own bounds the wait
        # (a connection it shuts down is closed, and one shut down once back in httpx2's pool
        # is found closed there before it is used).
        bound = _watchdog.watch(time.monotonic() + _DRAIN_SECONDS, self.response)
        left = 65536
        try:
            for piece in self.body:  # its end gives the connection back (httpx2's iter_raw)
                left -= len(piece)
                if left <= 0:
                    return
        except Exception:
            logger.debug("reading a provider stream's end failed", exc_info=True)
        finally:
            _watchdog.cancel(bound)


class _Replay:
    """A cached completion replayed as a stream."""

    ttft: float | None = None
    request_id = ""

    def __init__(self, raw: dict[str, Any]) -> None:
        self.raw = raw

    def chunks(self) -> Iterator[dict[str, Any] | object]:
        choice = self.raw["choices"][0]
        message = choice.get("message") or {}
        delta: dict[str, Any] = {"role": "assistant", "content": message.get("content") or ""}
        if message.get("tool_calls"):
            delta["tool_calls"] = [{**tc, "index": i} for i, tc in enumerate(message["tool_calls"])]
        base = {
            "id": self.raw.get("id", "chatcmpl-cached"),
            "object": "chat.completion.chunk",
            "created": self.raw.get("created", 0),
            "model": self.raw.get("model", ""),
        }
        yield {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        yield {
            **base,
            "choices": [{"index": 0, "delta": {}, "finish_reason": choice.get("finish_reason")}],
        }
        yield _DONE

    def close(self) -> None:
        pass


def _parse_chunk(data: bytes) -> dict[str, Any]:
    text = data.decode("utf-8", "replace")  # an event stream is UTF-8 (as httpx2 decoded it)
    try:
        chunk = json.loads(text)
    except ValueError as exc:
        raise Malformed(f"stream chunk is not JSON: {text[:200]!r}") from exc
    if not isinstance(chunk, dict):
        raise Malformed(f"stream chunk is not an object: {text[:200]!r}")
    if "error" in chunk and not chunk.get("choices"):
        raise Malformed(f"the provider sent an error mid-stream: {str(chunk['error'])[:300]}")
    return chunk


def _body(response: _http.Response) -> Iterator[bytes]:
    """A stream's body as it arrives: straight from the lean transport's parser when nothing is
    to be decoded (httpx2's four generators and text decoder in between cost 0.08 ms before the
    first token in a granian worker), else through httpx2's `iter_bytes` (gzip, deflate, …;
    httpx2's own transport)."""
    body = response.stream
    if isinstance(body, transport.Body) and "content-encoding" not in response.headers:
        return iter(body)
    return response.iter_bytes()


def _lines(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of an event stream, without their ends: CRLF, LF or CR, as the SSE spec (and the
    openai SDK) have them. Not `str.splitlines` (httpx2's `iter_lines`): that also ends a line
    at U+0085, U+2028 and U+2029, which a JSON string may hold as they are."""
    rest = b""
    after_cr = False
    for chunk in chunks:
        if after_cr and chunk[:1] == b"\n":
            chunk = chunk[1:]  # the LF of a CRLF the chunks split
            after_cr = False
        if not chunk:
            continue
        after_cr = chunk[-1:] == b"\r"
        lines = (rest + chunk if rest else chunk).splitlines(keepends=True)
        rest = lines.pop() if lines[-1][-1:] not in (b"\n", b"\r") else b""
        for line in lines:
            yield line.rstrip(b"\r\n")
    if rest:
        yield rest


def _sse(lines: Iterator[bytes]) -> Iterator[bytes]:
    """The data of each server-sent event."""
    data: list[bytes] = []
    for line in lines:
        if not line:
            if data:
                yield b"\n".join(data)
                data = []
        elif line.startswith(b"data:"):
            data.append(line[5:].lstrip(b" "))
    if data:
        yield b"\n".join(data)


def _has_token(chunk: dict[str, Any]) -> bool:
    for choice in chunk.get("choices") or ():
        delta = choice.get("delta") or {}
        if delta.get("content") or delta.get("tool_calls") or choice.get("finish_reason"):
            return True
    return False


def _shutdown(response: _http.Response) -> None:
    # Closing a socket does not wake a thread blocked reading it; shutting it down does.
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


class _Watchdog:
    """One thread for every open stream's deadline: when one passes, that stream's connection is
    shut down. (A timer thread per stream cost 0.17 ms to start, before its first token.)

    The thread sleeps until the earliest deadline of a stream still open: a stream watched with a
    later one does not wake it (a wake-up is a switch of threads before the first token), and a
    stream cancelled before its deadline costs it no wake-up of its own.
    """

    def __init__(self) -> None:
        self._wake = threading.Condition()
        self._due: list[tuple[float, int]] = []  # (monotonic deadline, id), a heap
        self._open: dict[int, _http.Response] = {}  # cancelled ids are dropped from here
        self._ids = itertools.count()
        self._thread: threading.Thread | None = None

    def watch(self, deadline: float, response: _http.Response) -> int:
        with self._wake:
            ident = next(self._ids)
            self._open[ident] = response
            heapq.heappush(self._due, (deadline, ident))
            if self._thread is None or not self._thread.is_alive():  # first use, or a fork
                self._thread = threading.Thread(
                    target=self._run, name="llmcalls-stream-deadlines", daemon=True
                )
                self._thread.start()
            elif self._due[0][1] == ident:  # earlier than what the thread sleeps until
                self._wake.notify()
        return ident

    def cancel(self, ident: int) -> None:
        with self._wake:
            self._open.pop(ident, None)

    def _run(self) -> None:
        due, live = self._due, self._open
        while True:
            with self._wake:
                while True:
                    while due and due[0][1] not in live:  # cancelled: nothing to wait for
                        heapq.heappop(due)
                    if due and due[0][0] <= time.monotonic():
                        break
                    self._wake.wait(due[0][0] - time.monotonic() if due else None)
                _, ident = heapq.heappop(due)
                response = live.pop(ident)
            _shutdown(response)


_watchdog = _Watchdog()


def _open_stream(call: _Call, target: Target, budget: float) -> _Live:
    body = {
        "model": target.model,
        "messages": call.messages,
        "stream": True,
        "stream_options": {"include_usage": True},
        **call.params,
    }
    response = _send(target, "/chat/completions", body, budget, Accept="text/event-stream")
    if response.status_code >= 400:
        try:
            response.read()
        finally:
            response.close()
        raise ProviderStatus(response)
    # The deadline holds mid-stream too: the watchdog cuts the connection when it passes.
    watch = _watchdog.watch(call.deadline_at, response)
    live = _Live(response, watch)
    try:
        for data in live.events:
            if data == b"[DONE]":
                raise EarlyEnd("the stream ended before its first token")
            chunk = _parse_chunk(data)
            live.buffered.append(chunk)
            if _has_token(chunk):
                live.ttft = time.monotonic() - call.started
                return live
        raise EarlyEnd("the stream ended before its first token")
    except BaseException:
        live.close()
        raise


class CompletionStream:
    """Iterate for Delta objects; afterwards `result` holds the Completion.

    The call's id is known before the first delta (the proxy sends it as a header).
    """

    def __init__(
        self, call: _Call, target: Target, source: _Live | _Replay, *, cache_hit: bool
    ) -> None:
        self.call = call
        self.call_id = call.id
        self.target = target
        self.source = source
        self.cache_hit = cache_hit
        self.result: Completion | None = None
        self._iterator = self._iterate()

    @property
    def cache_kind(self) -> str:
        """ "exact" or "semantic" when the answer is replayed from a cache, else ""."""
        if not self.cache_hit:
            return ""
        return "semantic" if self.call.served is not None else "exact"

    def __iter__(self) -> Iterator[Delta]:
        return self._iterator

    def __next__(self) -> Delta:
        return next(self._iterator)

    def close(self) -> None:
        """Stop reading (e.g. the client went away); the call is logged as cut by the caller."""
        self._iterator.close()
        if not self.call.logged:  # closed before iteration started
            self.source.close()
            self.call.log(
                status="error",
                provider=self.target.provider,
                model=self.target.model,
                error_class="StreamClosed",
                error_message="the caller closed the stream before reading it",
            )

    def __enter__(self) -> CompletionStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        # A stream dropped unread is still logged (and its connection released).
        if not self.call.logged:
            with contextlib.suppress(Exception):
                self.close()

    def _iterate(self) -> Generator[Delta, None, None]:
        call, target = self.call, self.target
        text: list[str] = []
        tools: dict[int, dict[str, Any]] = {}
        finish = ""
        usage_data: dict[str, Any] | None = None
        done = False
        error: LLMError | None = None
        try:
            for chunk in self.source.chunks():
                if chunk is _DONE:
                    done = True
                    break
                assert isinstance(chunk, dict)
                if chunk.get("usage"):
                    usage_data = chunk["usage"]
                for choice in chunk.get("choices") or ():
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        text.append(delta["content"])
                    for tc in delta.get("tool_calls") or ():
                        _merge_tool_call(tools, tc)
                    if choice.get("finish_reason"):
                        finish = choice["finish_reason"]
                content = "".join(
                    (c.get("delta") or {}).get("content") or "" for c in chunk.get("choices") or ()
                )
                tool_deltas = [
                    tc
                    for c in chunk.get("choices") or ()
                    for tc in (c.get("delta") or {}).get("tool_calls") or ()
                ]
                yield Delta(text=content, tool_calls=tool_deltas or None, raw=chunk)
            if not done and not finish:
                raise EarlyEnd("the stream ended without finishing")
        except GeneratorExit:
            error = StreamCut("the caller stopped reading the stream", call_id=call.id)
            raise
        except Exception as exc:
            if call.remaining() <= 0:
                error = DeadlineExceeded(
                    f"The {call.deadline:g}s deadline passed mid-stream "
                    f"after {len(''.join(text))} characters",
                    call_id=call.id,
                )
            else:
                error = StreamCut(
                    f"The stream from {target.key} broke after {len(''.join(text))} "
                    f"characters: {describe(exc)}",
                    call_id=call.id,
                )
            breaker().failure(target.key)
            raise error from exc
        finally:
            self.source.close()
            tool_calls = [tools[i] for i in sorted(tools)] or None
            ttft = self.source.ttft
            answer = _Answer(
                text="".join(text),
                tool_calls=tool_calls,
                finish_reason=finish,
                usage=usage_data,
                raw=_as_completion(target.model, "".join(text), tool_calls, finish, usage_data),
                request_id=self.source.request_id,
                ttft_ms=round(ttft * 1000, 3)
                if ttft is not None
                else 0.0
                if self.cache_hit
                else None,
            )
            self.result = _finish(call, target, answer, hit=self.cache_hit, error=error)


def _merge_tool_call(tools: dict[int, dict[str, Any]], delta: dict[str, Any]) -> None:
    index = delta.get("index", 0)
    current = tools.setdefault(
        index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
    )
    if delta.get("id"):
        current["id"] = delta["id"]
    if delta.get("type"):
        current["type"] = delta["type"]
    function = delta.get("function") or {}
    if function.get("name"):
        current["function"]["name"] += function["name"]
    if function.get("arguments"):
        current["function"]["arguments"] += function["arguments"]


def _as_completion(
    model: str,
    text: str,
    tool_calls: list[dict[str, Any]] | None,
    finish: str,
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message["tool_calls"] = tool_calls
    return {
        "id": "chatcmpl-" + uuid.uuid4().hex,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }
