"""The semantic cache: a near-repeat of a question gets an answer a reviewer already approved.

A route with `semantic_cache: {embedding_route, threshold, ttl, serve}` keys its entries by
everything but the text of the last user message (service, feature, the route's models, the
other messages, tools and parameters: `key()`), and finds one by the cosine similarity of that
text's embedding, at or above the threshold, within the same key. The embedding is itself a
model call through llmcalls (`client.embed`): logged with its cost, inside the caller's deadline
and the feature's budget.

Verdict-aware: with `serve: approved_only` an entry is served only once a proposal linked to the
call that produced it (`Proposal.llm_call_id`) was approved as proposed; a rejection or an edit
of a proposal linked to that call, or to a call served from it, evicts it for good
(`on_proposal_committed`, connected to approvals.events.proposal_committed). `serve: any` serves
every entry. Errors, refusals, truncated answers and tool calls are never stored.

Search without pgvector: each process keeps an index per key in memory, fed from the table
(`changed_at` cursor, at most every LLM_SEMANTIC_REFRESH seconds, and at once for what the process
writes itself). Per entry it holds the unit vector as float16 and a 256-bit sign sketch (random
hyperplanes), the sketches column-major. A lookup computes the Hamming distance of the query's
sketch to every servable entry of its key (four contiguous XOR-and-popcount passes), computes the
exact cosine of the entries within `within(threshold)` bits only (at most CANDIDATES, the nearest),
and then asks the table, in one statement by primary key, whether the best of those is still
servable: the index may miss an entry another process just wrote, never serve one that was
evicted or expired, whatever process evicted it and however stale this process's index is.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
import orjson
from django.conf import settings
from django.db import connection
from django.db.models.functions import Now
from django.utils import timezone

from llmcalls.models import LLMCall, SemanticCacheEntry
from llmcalls.routing import RouteConfig, SemanticCache

logger = logging.getLogger("llmcalls")

SKETCH_BITS = 256
WORDS = SKETCH_BITS // 64
CANDIDATES = 32  # at most this many exact cosines per lookup, the nearest by sketch
BLOCKED = 1024  # added to the sketch distance of an entry that may not be served
OVERLAP = timedelta(seconds=5)  # re-read window: writes that committed after a later one
APPROVED_STATES = frozenset({"approved", "executing", "executed", "failed"})


# --- what is compared ------------------------------------------------------------------------------


def split_question(messages: list[dict[str, Any]]) -> tuple[list[Any], str] | None:
    """(the messages with the last user message's text taken out, that text); None when there
    is no user text to compare."""
    for index in range(len(messages) - 1, -1, -1):
        message = messages[index]
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        content = message.get("content")
        if isinstance(content, str):
            text, rest = content, None
        elif isinstance(content, list):
            text = "\n".join(
                str(p.get("text") or "")
                for p in content
                if isinstance(p, dict) and p.get("type") == "text"
            )
            # Images and other parts stay in the key: a different picture is a different question.
            rest = [p for p in content if not (isinstance(p, dict) and p.get("type") == "text")]
        else:
            return None
        if not text.strip():
            return None
        without = [*messages[:index], {**message, "content": rest}, *messages[index + 1 :]]
        return without, text
    return None


def key(
    *, service: str, feature: str, route: RouteConfig, params: dict[str, Any], context: list[Any]
) -> str:
    """Everything but the last user message's text, hashed: one service never reads another's
    entries, nor one feature another's."""
    assert route.semantic_cache is not None
    body = json.dumps(
        [
            service,
            feature,
            route.feature,
            [t.key for t in route.targets],
            route.semantic_cache.embedding_route,
            params,
            context,
        ],
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(body.encode()).hexdigest()


def unit(vector: Any) -> np.ndarray:
    array = np.asarray(vector, dtype=np.float32)
    norm = float(np.linalg.norm(array))
    if array.ndim != 1 or not array.size or not np.isfinite(norm) or norm == 0:
        raise ValueError("not an embedding: a non-empty finite vector is needed")
    return array / norm


_planes: dict[int, np.ndarray] = {}


def sketch(vectors: np.ndarray) -> np.ndarray:
    """256 sign bits per row (random hyperplanes, fixed seed), as 4 uint64."""
    dim = vectors.shape[-1]
    planes = _planes.get(dim)
    if planes is None:
        planes = np.random.default_rng(20).standard_normal((dim, SKETCH_BITS)).astype(np.float32)
        _planes[dim] = planes
    bits = (vectors.astype(np.float32) @ planes) > 0
    return np.packbits(bits, axis=-1).view(np.uint64)


# --- the index of one process ----------------------------------------------------------------------


class _KeyIndex:
    """The entries of one key: arrays grown by doubling, slots never reused.

    The sketches are stored column-major (one contiguous uint64 row per 64-bit word), so a
    search is four XOR-and-popcount passes over contiguous memory, summed into one uint16 array
    that starts from `blocked` (0 for a servable slot, BLOCKED for an evicted, expired or, with
    `approved_only`, not yet approved one)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.count = 0
        self.ids = np.zeros(16, dtype=np.int64)
        self.vectors = np.zeros((16, dim), dtype=np.float16)
        self.sketches = np.zeros((WORDS, 16), dtype=np.uint64)
        self.expires = np.zeros(16, dtype=np.float64)
        # Per slot: BLOCKED unless live (blocked_any), unless live and approved (blocked_approved).
        self.blocked_any = np.zeros(16, dtype=np.uint16)
        self.blocked_approved = np.zeros(16, dtype=np.uint16)
        self.next_expiry = float("inf")  # the earliest expiry among the unblocked slots
        self.slot: dict[int, int] = {}

    def _grow(self) -> None:
        size = len(self.ids) * 2
        for name in ("ids", "vectors", "expires", "blocked_any", "blocked_approved"):
            old = getattr(self, name)
            new = np.zeros((size, *old.shape[1:]), dtype=old.dtype)
            new[: self.count] = old[: self.count]
            setattr(self, name, new)
        sketches = np.zeros((WORDS, size), dtype=np.uint64)
        sketches[:, : self.count] = self.sketches[:, : self.count]
        self.sketches = sketches

    def put(
        self, entry_id: int, vector: np.ndarray, *, live: bool, approved: bool, expires: float
    ) -> None:
        """Add or update an entry. A slot is filled before it is counted, so a search running
        in another thread never sees a half-written one."""
        slot = self.slot.get(entry_id)
        if slot is None:
            if not live:
                return
            if self.count == len(self.ids):
                self._grow()
            slot = self.count
            self.ids[slot] = entry_id
            self.vectors[slot] = vector
            self.sketches[:, slot] = sketch(vector[None, :])[0]
        self.expires[slot] = expires
        self.blocked_any[slot] = 0 if live else BLOCKED
        self.blocked_approved[slot] = 0 if live and approved else BLOCKED
        if live:
            self.next_expiry = min(self.next_expiry, expires)
        if slot == self.count:
            self.slot[entry_id] = slot
            self.count += 1

    def _expire(self, now: float) -> None:
        """Block the slots whose time is up (for good: an expiry is never extended)."""
        n = self.count
        expired = self.expires[:n] <= now
        self.blocked_any[:n][expired] = BLOCKED
        self.blocked_approved[:n][expired] = BLOCKED
        alive = self.expires[:n][self.blocked_any[:n] == 0]
        self.next_expiry = float(alive.min()) if alive.size else float("inf")

    def search(
        self,
        query: np.ndarray,
        query_sketch: np.ndarray,
        *,
        approved_only: bool,
        now: float,
        threshold: float = -1.0,
    ) -> list[tuple[int, float]]:
        """(entry id, cosine) of the candidates among the servable entries, best first: those
        whose sketch is within `within(threshold)` bits of the query's, at most CANDIDATES of
        them (the nearest by sketch)."""
        n = self.count
        if not n:
            return []
        if now >= self.next_expiry:
            self._expire(now)
        scratch = _scratch(n)
        distance, word, bits = scratch.distance[:n], scratch.word[:n], scratch.bits[:n]
        np.copyto(distance, (self.blocked_approved if approved_only else self.blocked_any)[:n])
        # First pass: the first 64 bits only, with their own bound; what survives (about 2% of
        # unrelated entries at a threshold of 0.9) gets the other 192 bits.
        np.bitwise_xor(self.sketches[0, :n], query_sketch[0], out=word)
        np.bitwise_count(word, out=bits)
        np.add(distance, bits, out=distance)
        candidates = np.flatnonzero(distance <= within(threshold, 64))
        if len(candidates) * 4 < n:
            rest = self.sketches[1:, candidates] ^ query_sketch[1:, None]
            full = distance[candidates] + np.bitwise_count(rest).sum(axis=0, dtype=np.uint16)
        else:  # a low threshold lets most through: the other words over every entry instead
            for w in range(1, WORDS):
                np.bitwise_xor(self.sketches[w, :n], query_sketch[w], out=word)
                np.bitwise_count(word, out=bits)
                np.add(distance, bits, out=distance)
            candidates = np.arange(n)
            full = distance
        keep = full <= within(threshold)
        candidates, full = candidates[keep], full[keep]
        if len(candidates) > CANDIDATES:
            candidates = candidates[np.argpartition(full, CANDIDATES - 1)[:CANDIDATES]]
        if not len(candidates):
            return []
        cosines = self.vectors[candidates].astype(np.float32) @ query
        order = np.argsort(-cosines)
        return [(int(self.ids[candidates[i]]), float(cosines[i])) for i in order]


@dataclass
class _Scratch:
    distance: np.ndarray
    word: np.ndarray
    bits: np.ndarray


_scratches = threading.local()


def _scratch(n: int) -> _Scratch:
    """This thread's work arrays for a search over n entries (no allocation per lookup)."""
    current: _Scratch | None = getattr(_scratches, "current", None)
    if current is None or len(current.distance) < n:
        size = max(1024, 1 << (n - 1).bit_length())
        current = _Scratch(
            np.empty(size, dtype=np.uint16),
            np.empty(size, dtype=np.uint64),
            np.empty(size, dtype=np.uint8),
        )
        _scratches.current = current
    return current


@functools.lru_cache(maxsize=256)
def within(threshold: float, bits: int = SKETCH_BITS) -> int:
    """The distance in the first `bits` bits of the sketch beyond which an entry is not looked
    at: a random hyperplane separates two unit vectors at angle a with probability p = a/pi, so
    an entry exactly at the threshold differs in bits * p of them on average; 4.5 standard
    deviations above that keeps all but ~3 in a million of the entries at the threshold (fewer
    of those above it) for the exact comparison, at each of the two passes. A threshold of -1
    looks at every entry."""
    if threshold <= -1.0:
        return BLOCKED - 1
    p = math.acos(max(-1.0, min(1.0, threshold))) / math.pi
    spread = 4.5 * math.sqrt(bits * p * (1 - p))
    return min(bits, math.ceil(bits * p + spread) + 1)


@dataclass
class Index:
    """Every key's entries as this process knows them."""

    keys: dict[str, _KeyIndex] = field(default_factory=dict)
    where: dict[int, str] = field(default_factory=dict)  # entry id -> key
    cursor: datetime | None = None
    refreshed: float = float("-inf")
    lock: threading.Lock = field(default_factory=threading.Lock)

    def put(self, row: dict[str, Any]) -> None:
        vector = np.frombuffer(bytes(row["embedding"]), dtype=np.float16)
        index = self.keys.get(row["key"])
        if index is None or index.dim != len(vector):
            # A new key, or the embedding model changed size: the old vectors are not comparable.
            index = self.keys[row["key"]] = _KeyIndex(len(vector))
        self.where[row["id"]] = row["key"]
        index.put(
            row["id"],
            vector,
            live=row["evicted_at"] is None,
            approved=row["approved_at"] is not None,
            expires=row["expires_at"].timestamp(),
        )

    def refresh(self, *, force: bool = False) -> None:
        """Read what changed in the table since the last look (all of it the first time)."""
        now = time.monotonic()
        if not force and now - self.refreshed < settings.LLM_SEMANTIC_REFRESH:
            return
        with self.lock:
            if not force and now - self.refreshed < settings.LLM_SEMANTIC_REFRESH:
                return
            rows = SemanticCacheEntry.objects.order_by("changed_at")
            if self.cursor is None:
                rows = rows.filter(evicted_at__isnull=True, expires_at__gt=timezone.now())
            else:
                rows = rows.filter(changed_at__gt=self.cursor - OVERLAP)
            for row in rows.values(
                "id", "key", "embedding", "approved_at", "evicted_at", "expires_at", "changed_at"
            ).iterator(chunk_size=2000):
                self.put(dict(row))
                self.cursor = row["changed_at"]
            if self.cursor is None:
                self.cursor = timezone.now() - OVERLAP
            self.refreshed = now

    def block(self, key: str, entry_id: int) -> None:
        """Never rank this entry again (the table said it was evicted or expired)."""
        index = self.keys.get(key)
        slot = None if index is None else index.slot.get(entry_id)
        if index is not None and slot is not None:
            index.blocked_any[slot] = index.blocked_approved[slot] = BLOCKED

    def servable(self, key: str) -> int:
        """How many entries of `key` this process would rank (with `serve: any`)."""
        index = self.keys.get(key)
        return 0 if index is None else int((index.blocked_any[: index.count] == 0).sum())

    def search(
        self, key: str, query: np.ndarray, *, approved_only: bool, threshold: float = -1.0
    ) -> list[tuple[int, float]]:
        index = self.keys.get(key)
        if index is None or index.dim != len(query):
            return []
        return index.search(
            query,
            sketch(query[None, :])[0],
            approved_only=approved_only,
            now=time.time(),
            threshold=threshold,
        )


_index = Index()


def index() -> Index:
    return _index


def forget() -> None:
    """Drop this process's index (tests; a new one is read on the next lookup)."""
    global _index
    _index = Index()


# --- lookups and stores ----------------------------------------------------------------------------


@dataclass
class Probe:
    """A call on a route with a semantic cache: its key and question, embedded lazily."""

    config: SemanticCache
    key: str
    text: str
    vector: np.ndarray | None = None
    embedding_call_id: uuid.UUID | None = None


@dataclass
class Hit:
    entry_id: int
    source_call_id: uuid.UUID
    similarity: float
    provider: str
    model: str
    raw: dict[str, Any]
    cost_usd: Decimal | None


def probe(
    *,
    route: RouteConfig | None,
    service: str,
    feature: str,
    params: dict[str, Any],
    messages: list[dict[str, Any]],
) -> Probe | None:
    if route is None or route.semantic_cache is None:
        return None
    split = split_question(messages)
    if split is None:
        return None
    context, text = split
    return Probe(
        route.semantic_cache,
        key(service=service, feature=feature, route=route, params=params, context=context),
        text,
    )


def lookup(found: Probe) -> Hit | None:
    """The best servable entry at or above the threshold, as the table has it now."""
    assert found.vector is not None
    current = index()
    current.refresh()
    ranked = [
        (entry_id, cosine)
        for entry_id, cosine in current.search(
            found.key,
            found.vector,
            approved_only=found.config.approved_only,
            threshold=found.config.threshold,
        )
        if cosine >= found.config.threshold
    ]
    if not ranked:
        return None
    rows = _servable_rows([entry_id for entry_id, _ in ranked], found)
    for entry_id, cosine in ranked:
        row = rows.get(entry_id)
        if row is None:
            # Evicted or expired since the index read it: the table decides, and this process
            # stops ranking it now rather than at its next refresh.
            current.block(found.key, entry_id)
            continue
        call_id, response, cost = row
        return Hit(
            entry_id,
            call_id,
            min(cosine, 1.0),
            response["provider"],
            response["model"],
            response["raw"],
            cost,
        )
    return None


def _servable_rows(
    ids: list[int], found: Probe
) -> dict[int, tuple[uuid.UUID, dict[str, Any], Decimal | None]]:
    """The entries among `ids` the table still lets this key serve: one indexed statement by
    primary key, without the ORM's compile step (it is on every hit's path)."""
    table = SemanticCacheEntry._meta.db_table
    sql = (
        f"SELECT id, call_id, response, CAST(cost_usd AS TEXT) FROM {table} "  # noqa: S608
        f"WHERE id IN ({', '.join(['%s'] * len(ids))}) AND key = %s "
        "AND evicted_at IS NULL AND expires_at > %s"
        + (" AND approved_at IS NOT NULL" if found.config.approved_only else "")
    )
    now = connection.ops.adapt_datetimefield_value(timezone.now())
    with connection.cursor() as cursor:
        cursor.execute(sql, [*ids, found.key, now])
        fetched = cursor.fetchall()
    rows = {}
    for entry_id, call_id, response, cost in fetched:
        rows[int(entry_id)] = (
            call_id if isinstance(call_id, uuid.UUID) else uuid.UUID(str(call_id)),
            orjson.loads(response) if isinstance(response, (str, bytes)) else response,
            None if cost is None else Decimal(str(cost)),
        )
    return rows


def cacheable(raw: dict[str, Any]) -> bool:
    """Only whole, plain answers: not truncated or filtered, not a refusal, not a tool call."""
    choices = raw.get("choices") or []
    if len(choices) != 1:
        return False
    choice = choices[0]
    message = choice.get("message") or {}
    return (
        choice.get("finish_reason") == "stop"
        and not message.get("tool_calls")
        and not message.get("function_call")
        and not message.get("refusal")
        and bool(str(message.get("content") or "").strip())
    )


def store(
    found: Probe,
    *,
    call_id: uuid.UUID,
    service: str,
    feature: str,
    provider: str,
    model: str,
    raw: dict[str, Any],
    cost_usd: Decimal | None,
) -> SemanticCacheEntry | None:
    """Keep a successful answer (if it may ever be served) and index it in this process."""
    if found.vector is None or not cacheable(raw):
        return None
    now = timezone.now()
    entry = SemanticCacheEntry.objects.create(
        key=found.key,
        call_id=call_id,
        service=service,
        feature=feature,
        embedding=found.vector.astype(np.float16).tobytes(),
        response={"provider": provider, "model": model, "raw": raw},
        cost_usd=cost_usd,
        created_at=now,
        expires_at=now + timedelta(seconds=found.config.ttl),
        approved_at=None if found.config.approved_only else now,
        changed_at=Now(),
    )
    with index().lock:
        index().put(
            {
                "id": entry.id,
                "key": entry.key,
                "embedding": entry.embedding,
                "approved_at": entry.approved_at,
                "evicted_at": None,
                "expires_at": entry.expires_at,
            }
        )
    return entry


# --- verdicts --------------------------------------------------------------------------------------


def verdict(*, call_id: uuid.UUID, approved: bool, why: str) -> int:
    """A proposal linked to `call_id` was decided. Approved as proposed: the entry that call
    produced may be served. Rejected or edited: that entry, and the entry the call was served
    from, are evicted. Returns the number of entries changed."""
    if approved:
        changed = SemanticCacheEntry.objects.filter(
            call_id=call_id, approved_at__isnull=True, evicted_at__isnull=True
        ).update(approved_at=Now(), changed_at=Now())
    else:
        source = LLMCall.objects.filter(id=call_id).values_list("cache_source", flat=True).first()
        sources = [call_id] + ([source] if source else [])
        changed = SemanticCacheEntry.objects.filter(
            call_id__in=sources, evicted_at__isnull=True
        ).update(evicted_at=Now(), evicted_because=why[:200], changed_at=Now())
    if changed:
        index().refresh(force=True)
    return changed


def on_proposal_committed(*, proposal_id: uuid.UUID, **kwargs: Any) -> None:
    """Receiver of approvals.events.proposal_committed: apply the verdict, if there is one."""
    from approvals.models import Proposal

    if kwargs.get("created") and kwargs.get("llm_call_id") is None:
        return  # a new proposal linked to no model call: nothing to read (the submit stays one statement)

    row = (
        Proposal.objects.filter(pk=proposal_id, llm_call_id__isnull=False)
        .values("llm_call_id", "state", "final_payload")
        .first()
    )
    if row is None or row["llm_call_id"] is None:
        return
    call_id = row["llm_call_id"]
    if row["final_payload"] is not None:
        verdict(call_id=call_id, approved=False, why=f"proposal {proposal_id} edited")
    elif row["state"] == "rejected":
        verdict(call_id=call_id, approved=False, why=f"proposal {proposal_id} rejected")
    elif row["state"] in APPROVED_STATES:
        verdict(call_id=call_id, approved=True, why=f"proposal {proposal_id} approved")
