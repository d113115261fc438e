"""Relay committed changes to this process's websocket groups by tailing the audit table.

Only used with the in-memory channel layer (the embedded default, no Redis): there a
broadcast cannot cross processes, yet the Celery worker executes proposals in a separate
process. Every change of a proposal writes an AuditEvent in the same transaction, and the
table is append-only with increasing ids, so the web process reads new events (`id > last`)
and broadcasts the proposals they name. It polls every RELAY_POLL seconds and at once when
a change in this process commits (`nudge`).

Ids are allocated before commit, so a slow transaction can commit an id lower than one already
seen. Missing ids are remembered as gaps and re-read for GAP_PATIENCE seconds (a rolled-back
insert leaves a gap that never fills). Anything older is covered by the page's resync after a
reconnect, and by the next change of the same proposal.

The long polls of this process (approvals/waits.py) follow the same reading: they are told the
proposals of every change read, whoever listens on a page.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable

from channels.db import database_sync_to_async
from django.db.models import Max, Q

from approvals import events
from approvals.models import AuditEvent

log = logging.getLogger("gatehouse.relay")
RELAY_POLL = 0.5
GAP_PATIENCE = 30.0
MAX_GAP = 10_000
BATCH = 1000


class AuditRelay:
    def __init__(self) -> None:
        self.loop: asyncio.AbstractEventLoop | None = None
        self.wake: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None
        self.last_id = 0
        self.gaps: dict[int, float] = {}
        self.ready_since: float | None = None  # reading since (monotonic), None while not
        self.followers: list[tuple[Callable[[list[uuid.UUID]], None], Callable[[], None]]] = []

    def follow(self, changed: Callable[[list[uuid.UUID]], None], ready: Callable[[], None]) -> None:
        """Also tell `changed` the proposals of every change read, and `ready` each time the
        relay (re)starts reading (changes before that are never read)."""
        self.followers.append((changed, ready))

    def running(self) -> bool:
        return self.task is not None and not self.task.done()

    def ensure_started(self) -> None:
        """Start tailing in the running event loop (called by consumers on connect and by
        long polls)."""
        if not events.uses_process_local_layer() or self.running():
            return
        self.loop = asyncio.get_running_loop()
        self.wake = asyncio.Event()
        events.wake_after_commit(self.nudge)
        self.task = self.loop.create_task(self._run())

    def nudge(self) -> None:
        """Thread-safe: look for new events now rather than at the next poll."""
        loop, wake = self.loop, self.wake
        if loop is None or wake is None or loop.is_closed():
            return
        loop.call_soon_threadsafe(wake.set)

    async def _run(self) -> None:
        assert self.wake is not None
        self.ready_since = None
        self.last_id = await database_sync_to_async(_max_id)()
        self.ready_since = time.monotonic()
        for _, ready in self.followers:
            ready()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), RELAY_POLL)
            self.wake.clear()
            try:
                await self.poll()
            except Exception:
                log.exception("relay: poll failed; retrying")
                await asyncio.sleep(RELAY_POLL)

    async def poll(self) -> int:
        """Broadcast the proposals named by events not yet relayed; returns how many."""
        rows = await database_sync_to_async(_events_after)(self.last_id, list(self.gaps))
        now = time.monotonic()
        proposals: dict[uuid.UUID, None] = {}
        changed: dict[uuid.UUID, None] = {}
        for event_id, proposal_id, action_type_id in rows:
            self.gaps.pop(event_id, None)
            if event_id > self.last_id:
                if event_id - self.last_id - 1 <= MAX_GAP:
                    for missing in range(self.last_id + 1, event_id):
                        self.gaps[missing] = now
                self.last_id = event_id
            if proposal_id is not None:
                changed[proposal_id] = None
            # Only what an open page in this process listens for is worth rendering.
            if (
                proposal_id is not None
                and action_type_id is not None
                and events.anyone_listening(action_type_id)
            ):
                proposals[proposal_id] = None
        for gap, since in list(self.gaps.items()):
            if now - since > GAP_PATIENCE:
                del self.gaps[gap]
        if changed:
            for follower, _ in self.followers:
                follower(list(changed))
        for proposal_id in proposals:
            message = await database_sync_to_async(events.render_update)(proposal_id)
            if message is not None:
                await events.send_update(message)
        return len(proposals)


def _max_id() -> int:
    return AuditEvent.objects.aggregate(top=Max("id"))["top"] or 0


def _events_after(last_id: int, gaps: list[int]) -> list[tuple[int, uuid.UUID | None, int | None]]:
    where = Q(id__gt=last_id)
    if gaps:
        where |= Q(id__in=gaps)
    return list(
        AuditEvent.objects.filter(where)
        .order_by("id")
        .values_list("id", "proposal_id", "proposal__action_type_id")[:BATCH]
    )


relay = AuditRelay()
