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
hyperplanes); a lookup ranks the key's servable entries by Hamming distance of the sketches
(XOR and popcount over 32 bytes each), computes the exact cosine of the best CANDIDATES only, and
then asks the table whether the best of those is still servable: the index may miss an entry
another process just wrote, never serve one that was evicted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import numpy as np
from django.conf import settings
from django.db.models.functions import Now
from django.utils import timezone

from llmcalls.models import LLMCall, SemanticCacheEntry
from llmcalls.routing import RouteConfig, SemanticCache

logger = logging.getLogger("llmcalls")

SKETCH_BITS = 256
CANDIDATES = 32  # exact cosines computed per lookup, after the sketch ranking
OVERLAP = timedelta(seconds=5)  # re-read window: writes that committed after a later one
_FAR = np.iinfo(np.int32).max
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
    """The entries of one key: arrays grown by doubling, slots never reused."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.count = 0
        self.ids = np.zeros(16, dtype=np.int64)
        self.vectors = np.zeros((16, dim), dtype=np.float16)
        self.sketches = np.zeros((16, SKETCH_BITS // 64), dtype=np.uint64)
        self.live = np.zeros(16, dtype=bool)
        self.approved = np.zeros(16, dtype=bool)
        self.expires = np.zeros(16, dtype=np.float64)
        self.slot: dict[int, int] = {}

    def _grow(self) -> None:
        size = len(self.ids) * 2
        for name in ("ids", "vectors", "sketches", "live", "approved", "expires"):
            old = getattr(self, name)
            new = np.zeros((size, *old.shape[1:]), dtype=old.dtype)
            new[: self.count] = old[: self.count]
            setattr(self, name, new)

    def put(
        self, entry_id: int, vector: np.ndarray, *, live: bool, approved: bool, expires: float
    ) -> None:
        slot = self.slot.get(entry_id)
        if slot is None:
            if not live:
                return
            if self.count == len(self.ids):
                self._grow()
            slot = self.count
            self.count += 1
            self.slot[entry_id] = slot
            self.ids[slot] = entry_id
            self.vectors[slot] = vector
            self.sketches[slot] = sketch(vector[None, :])[0]
        self.live[slot] = live
        self.approved[slot] = approved
        self.expires[slot] = expires

    def search(
        self, query: np.ndarray, query_sketch: np.ndarray, *, approved_only: bool, now: float
    ) -> list[tuple[int, float]]:
        """(entry id, cosine) of the best candidates among the servable entries, best first."""
        n = self.count
        if not n:
            return []
        servable = self.live[:n] & (self.expires[:n] > now)
        if approved_only:
            servable &= self.approved[:n]
        if not servable.any():
            return []
        distance = np.bitwise_count(self.sketches[:n] ^ query_sketch).sum(axis=1, dtype=np.int32)
        distance[~servable] = _FAR
        k = min(CANDIDATES, int(servable.sum()))
        candidates = np.argpartition(distance, k - 1)[:k] if k < n else np.arange(n)
        candidates = candidates[distance[candidates] != _FAR]
        cosines = self.vectors[candidates].astype(np.float32) @ query
        order = np.argsort(-cosines)
        return [(int(self.ids[candidates[i]]), float(cosines[i])) for i in order]


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

    def search(
        self, key: str, query: np.ndarray, *, approved_only: bool
    ) -> list[tuple[int, float]]:
        index = self.keys.get(key)
        if index is None or index.dim != len(query):
            return []
        return index.search(
            query, sketch(query[None, :])[0], approved_only=approved_only, now=time.time()
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
            found.key, found.vector, approved_only=found.config.approved_only
        )
        if cosine >= found.config.threshold
    ]
    if not ranked:
        return None
    rows = SemanticCacheEntry.objects.filter(
        id__in=[entry_id for entry_id, _ in ranked],
        key=found.key,
        evicted_at__isnull=True,
        expires_at__gt=timezone.now(),
    )
    if found.config.approved_only:
        rows = rows.filter(approved_at__isnull=False)
    servable = {row["id"]: row for row in rows.values("id", "call_id", "response", "cost_usd")}
    for entry_id, cosine in ranked:
        row = servable.get(entry_id)
        if row is None:
            continue  # evicted or expired since the index read it: the table decides
        response = row["response"]
        return Hit(
            entry_id,
            row["call_id"],
            min(cosine, 1.0),
            response["provider"],
            response["model"],
            response["raw"],
            row["cost_usd"],
        )
    return None


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
