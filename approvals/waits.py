"""Long polls (`GET /api/v1/proposals/{id}?wait=`, MCP's get_proposal) wait here for a decision.

A waiter costs a future, not a loop of reads. Each process (each event loop: one under uvicorn)
keeps a registry of the proposals someone waits on, with one source telling it which proposals
changed:

- with Redis, one pub/sub subscription per process to `events.changes_channel()`, where
  `events.proposal_changed` publishes a changed proposal's id once its transaction commits;
- without Redis (the in-memory channel layer of `make run`), the audit relay (approvals/relay.py),
  which already reads every committed change of every process.

Hearing of a watched proposal, the registry re-reads it once for all its waiters (one query for
all proposals heard of meanwhile) and answers them all if it is decided. Nothing can strand a
waiter for long: a proposal nobody heard of is re-read every RECHECK_SECONDS in the same batched
way, whatever was heard before the source (re)connected is re-read when it connects, and at its
deadline a waiter gets a reading at most FRESH_AT_DEADLINE seconds old.

The registry reads by id alone: the caller has already read the proposal as the service that
asked (`load`), and a proposal never changes service.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import redis.asyncio as aioredis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection

from approvals import events, selectors
from approvals.models import Proposal
from approvals.relay import relay

log = logging.getLogger("gatehouse.waits")

RECHECK_SECONDS = 5.0  # the longest a lost event delays an answer
FRESH_AT_DEADLINE = 1.0  # a reading this recent answers a waiter whose time ran out
HEARD_MEMORY = 60.0  # how long an id heard of is remembered for waiters that join later
RECONNECT_SECONDS = 1.0
LOAD_CONCURRENCY = 8  # first reads of waiters at once, per process (the pool has DB_POOL_MAX)


@dataclass
class _Watch:
    """Everyone in this process waiting on one proposal."""

    latest: Proposal
    read_at: float  # when the read that gave `latest` started (monotonic)
    decided: asyncio.Future[Proposal]
    waiters: int = 0


@dataclass
class _Registry:
    """The waits of one event loop."""

    loop: asyncio.AbstractEventLoop
    watches: dict[uuid.UUID, _Watch] = field(default_factory=dict)
    dirty: set[uuid.UUID] = field(default_factory=set)  # heard of: re-read at once
    fresh: dict[uuid.UUID, list[asyncio.Future[Proposal | None]]] = field(default_factory=dict)
    heard_at: dict[uuid.UUID, float] = field(default_factory=dict)
    listening_since: float | None = None  # when the source last (re)connected
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    reads: int = 0  # queries made: tests and benchmarks read it
    # Waiters arrive in bursts (a deploy, a batch job): their first reads queue here rather than
    # for the database pool, whose short timeout would answer 503 (tests/approvals/test_long_poll).
    loading: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(LOAD_CONCURRENCY))

    def start(self) -> None:
        # A clean context: the tasks outlive the request that happened to start them.
        context = contextvars.Context()
        if events.uses_process_local_layer():
            context.run(relay.ensure_started)  # it calls source_connected once it reads
            if self.listening_since is None and relay.ready_since and relay.running():
                self.listening_since = relay.ready_since  # already reading (another loop)
        if self.tasks:
            return
        self.tasks.append(self.loop.create_task(self._read_loop(), context=context))
        if not events.uses_process_local_layer():
            self.tasks.append(self.loop.create_task(self._listen(), context=context))

    # --- what waiters do ---------------------------------------------------------------------

    def join(self, proposal: Proposal, since: float) -> _Watch:
        """Wait on `proposal`, read by a query that started at `since`."""
        watch = self.watches.get(proposal.pk)
        if watch is None:
            watch = _Watch(latest=proposal, read_at=since, decided=self.loop.create_future())
            self.watches[proposal.pk] = watch
            # A change heard of (or possibly missed) since that reading began: read it again.
            heard = self.heard_at.get(proposal.pk)
            if (
                self.listening_since is None
                or self.listening_since > since
                or (heard is not None and heard >= since)
            ):
                self._mark(proposal.pk)
        watch.waiters += 1
        return watch

    def waiting(self) -> int:
        return sum(watch.waiters for watch in self.watches.values())

    def leave(self, watch: _Watch) -> None:
        watch.waiters -= 1
        if watch.waiters <= 0 and self.watches.get(watch.latest.pk) is watch:
            del self.watches[watch.latest.pk]

    async def reading(self, watch: _Watch) -> Proposal:
        """The proposal as of now, or as of at most FRESH_AT_DEADLINE seconds ago."""
        if time.monotonic() - watch.read_at <= FRESH_AT_DEADLINE:
            return watch.latest
        future: asyncio.Future[Proposal | None] = self.loop.create_future()
        self.fresh.setdefault(watch.latest.pk, []).append(future)
        self.wake.set()
        return await future or watch.latest

    # --- what the source does ----------------------------------------------------------------

    def heard(self, proposal_ids: Iterable[uuid.UUID]) -> None:
        now = time.monotonic()
        for proposal_id in proposal_ids:
            self.heard_at[proposal_id] = now
            watch = self.watches.get(proposal_id)
            if watch is not None and not watch.decided.done():
                self._mark(proposal_id)
        if len(self.heard_at) > 10_000:
            self.heard_at = {k: t for k, t in self.heard_at.items() if now - t <= HEARD_MEMORY}

    def connected(self) -> None:
        """The source (re)started: what changed while it was away is read again."""
        self.listening_since = time.monotonic()
        for proposal_id, watch in self.watches.items():
            if not watch.decided.done():
                self._mark(proposal_id)

    def _mark(self, proposal_id: uuid.UUID) -> None:
        self.dirty.add(proposal_id)
        self.wake.set()

    # --- the tasks ---------------------------------------------------------------------------

    async def _read_loop(self) -> None:
        while True:
            now = time.monotonic()
            pending = [w.read_at for w in self.watches.values() if not w.decided.done()]
            timeout = max(min(pending) + RECHECK_SECONDS - now, 0.0) if pending else None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout)
            self.wake.clear()
            try:
                await self._read_due()
            except Exception:
                log.exception("re-reading waited-on proposals failed; retrying")
                await asyncio.sleep(RECONNECT_SECONDS)

    async def _read_due(self) -> None:
        now = time.monotonic()
        due = {
            pk
            for pk, watch in self.watches.items()
            if not watch.decided.done() and now - watch.read_at >= RECHECK_SECONDS
        }
        ids = (self.dirty & self.watches.keys()) | due | self.fresh.keys()
        self.dirty.clear()
        fresh, self.fresh = self.fresh, {}
        if not ids:
            return
        try:
            readings = await _read(ids)
        except BaseException:
            for futures in fresh.values():  # they answer with what they have
                for future in futures:
                    if not future.done():
                        future.set_result(None)
            for failed in self.watches.values():  # not again at once
                failed.read_at = max(failed.read_at, now)
            raise
        self.reads += 1
        for pk in ids:
            reading = readings.get(pk)
            for future in fresh.get(pk, ()):
                if not future.done():
                    future.set_result(reading)
            watch = self.watches.get(pk)
            if watch is not None:
                watch.read_at = now
                if reading is not None:
                    watch.latest = reading
                    if reading.is_decided and not watch.decided.done():
                        watch.decided.set_result(reading)

    async def _listen(self) -> None:
        """One subscription for the process; reconnects, and re-reads after each connect."""
        channel = events.changes_channel()
        while True:
            client = aioredis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=2)
            pubsub = client.pubsub()
            try:
                await pubsub.subscribe(channel)
                async for message in pubsub.listen():
                    if message["type"] == "subscribe":  # also after redis-py reconnected
                        self.connected()
                    elif message["type"] == "message":
                        with contextlib.suppress(ValueError, AttributeError):
                            self.heard([uuid.UUID(hex=message["data"].decode())])
            except (OSError, aioredis.RedisError):
                log.warning("waits: Redis subscription lost; reconnecting", exc_info=True)
            finally:
                self.listening_since = None
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
                    await client.aclose()
            await asyncio.sleep(RECONNECT_SECONDS)


def _read_many(ids: set[uuid.UUID]) -> dict[uuid.UUID, Proposal]:
    try:
        return selectors.proposals_by_id(proposal_ids=ids)
    finally:
        if not connection.in_atomic_block:  # back to the pool: the thread is not a request's
            connection.close()


_read = sync_to_async(_read_many, thread_sensitive=False)
_registries: dict[asyncio.AbstractEventLoop, _Registry] = {}


def registry() -> _Registry:
    """This event loop's registry (made on first use; those of closed loops are dropped)."""
    loop = asyncio.get_running_loop()
    found = _registries.get(loop)
    if found is None:
        for stale in [known for known in _registries if known.is_closed()]:
            del _registries[stale]
        found = _registries[loop] = _Registry(loop=loop)
    return found


def heard(proposal_ids: list[uuid.UUID]) -> None:
    """Thread-safe: these proposals changed (called by the relay without Redis)."""
    for loop, found in list(_registries.items()):
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                loop.call_soon_threadsafe(found.heard, proposal_ids)


def source_connected() -> None:
    """Thread-safe: the relay (re)started reading; anything before it is read again."""
    for loop, found in list(_registries.items()):
        if not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(found.connected)


relay.follow(heard, source_connected)


async def proposal_wait_decided(
    *, load: Callable[[], Awaitable[Proposal | None]], wait: float
) -> Proposal | None:
    """`load()` (None: not the caller's), then wait until the proposal is decided or `wait`
    seconds (at most LONG_POLL_MAX_SECONDS) have passed; the latest reading."""
    since = time.monotonic()
    if wait <= 0:
        return await load()
    waits = registry()
    waits.start()  # listening before the first read: what changes after it is heard
    async with waits.loading:
        proposal = await load()
    if proposal is None:
        return None
    return await proposal_wait_after_read(proposal, since=since, wait=wait)


async def proposal_wait_after_read(proposal: Proposal, *, since: float, wait: float) -> Proposal:
    """`proposal`, read (as its service) by a query that started at `since` (time.monotonic()),
    once it is decided or `wait` seconds (at most LONG_POLL_MAX_SECONDS) after `since`: the
    latest reading. Holds no thread and no database connection while it waits; cancelling it
    (the client went away) leaves nothing behind."""
    seconds = min(max(wait, 0.0), settings.LONG_POLL_MAX_SECONDS) - (time.monotonic() - since)
    if proposal.is_decided or seconds <= 0:
        return proposal
    waits = registry()
    waits.start()  # if it was not listening when the read began, join() reads again
    watch = waits.join(proposal, since)
    try:
        return await asyncio.wait_for(asyncio.shield(watch.decided), seconds)
    except TimeoutError:
        return await waits.reading(watch)
    finally:
        waits.leave(watch)
