"""Live updates for open reviewer pages, sent after the change commits.

Services call `proposal_changed(id)` inside their transaction (transition() and the submit
path do it for every state change). After commit, the proposal is rendered with the same
fragment templates the pages use and sent to the channel group of its action type; each
websocket consumer forwards it to its reviewer unless that reviewer raised the proposal.

Apps above approvals (notify: Slack, email) hear of the same changes through the signal
`proposal_committed`, sent after commit with the proposal's id; approvals never imports them.

With the Redis channel layer every process (web or worker) sends directly. With the in-memory
layer (the embedded default) a layer lives inside one process, so the web process relays what
every process wrote by tailing the audit table (approvals/relay.py); here we only wake it.

Long polls (approvals/waits.py) hear of changes the same two ways: with Redis, each change's
proposal id is published on `changes_channel()` (one PUBLISH, whoever waits); without, the
relay tells them.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

import redis
from asgiref.sync import async_to_sync
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels_redis.pubsub import RedisPubSubChannelLayer, RedisPubSubLoopLayer
from channels_redis.utils import decode_hosts
from django.conf import settings
from django.core.cache import cache
from django.db import transaction
from django.dispatch import Signal
from django.template.loader import render_to_string

from approvals import selectors
from approvals.models import Proposal, Review

log = logging.getLogger("gatehouse.events")
_pending: set[asyncio.Task[None]] = set()
EVENT_TYPE = "proposal.update"  # handled by QueueConsumer.proposal_update


def group_for_action_type(action_type_id: int) -> str:
    """The one place channel group names are made."""
    return f"gatehouse.queue.type-{action_type_id}"


def group_for_reviewer(user_id: int) -> str:
    """Every open socket of one reviewer (to close them when they log out)."""
    return f"gatehouse.reviewer-{user_id}"


# Every open socket: told when who may see which action type changed for everyone at once.
ALL_REVIEWERS_GROUP = "gatehouse.reviewers"


def _run(coroutine_function: Callable[..., Coroutine[Any, Any, None]], *args: Any) -> None:
    """Run a send from sync code (the usual case: a view, task or command), or schedule it on
    the running loop when called from async code."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        async_to_sync(coroutine_function)(*args)
    else:
        task = loop.create_task(coroutine_function(*args))
        _pending.add(task)  # keep a reference until it is done
        task.add_done_callback(_pending.discard)


async def _end_session(user_id: int) -> None:
    layer = get_channel_layer()
    if layer is not None:
        await layer.group_send(group_for_reviewer(user_id), {"type": "session.ended"})


async def _access_changed(user_ids: list[int] | None) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    groups = [ALL_REVIEWERS_GROUP] if user_ids is None else map(group_for_reviewer, user_ids)
    for group in groups:
        await layer.group_send(group, {"type": "access.changed"})


def reviewer_access_changed(user_ids: list[int] | None) -> None:
    """After commit, the open sockets of these reviewers (None: of everyone) re-read which
    action types they may see, and leave the groups of those they no longer may: group
    membership is not only read when a socket connects (approvals/apps.py connects the model
    signals that call this; each socket also re-reads it every LIVE_SESSION_CHECK_SECONDS)."""
    transaction.on_commit(lambda: _run(_access_changed, user_ids), robust=True)


def reviewer_logged_out(user_id: int) -> None:
    """Close the reviewer's open sockets: a logged-out browser must stop receiving pushes."""
    _run(_end_session, user_id)


# Rendering and sending an update costs a query and a template for every change; when no
# reviewer has a page open for the action type, it is skipped. Open pages say they listen when
# they connect and every PRESENCE_REFRESH seconds after; the mark lapses PRESENCE_TTL seconds
# after the last page closed. A process that found nobody listening believes it for
# ABSENCE_MEMORY seconds (one cache read per type per interval instead of one per change); a
# page therefore resynchronises when its socket opens and again after that interval
# (static/js/reviewer.js), so it misses nothing that changed while the news spread.
PRESENCE_TTL = 60
PRESENCE_REFRESH = 20
ABSENCE_MEMORY = 2.0
_absent_until: dict[int, float] = {}


def _presence_key(action_type_id: int) -> str:
    return f"gatehouse:listening:type-{action_type_id}"


def mark_listening(action_type_ids: list[int]) -> None:
    """An open reviewer page listens for these action types."""
    cache.set_many({_presence_key(i): 1 for i in action_type_ids}, timeout=PRESENCE_TTL)
    for action_type_id in action_type_ids:
        _absent_until.pop(action_type_id, None)


def anyone_listening(action_type_id: int) -> bool:
    now = time.monotonic()
    if _absent_until.get(action_type_id, 0.0) > now:
        return False
    present = cache.get(_presence_key(action_type_id)) is not None
    if not present:
        _absent_until[action_type_id] = now + ABSENCE_MEMORY
    return present


def forget_absences() -> None:
    _absent_until.clear()


def uses_process_local_layer() -> bool:
    return isinstance(get_channel_layer(), InMemoryChannelLayer)


#: The hook for apps above approvals: sent once the transaction that changed a proposal (its
#: state, claim, reviews, SLA marks or expiry) commits, with `proposal_id` (a UUID). It says
#: only *that* something changed; a receiver reads what it needs. Receivers run on the
#: committing request or task, so they enqueue work rather than do it, and an exception in one
#: is logged and never reaches the caller. Connect in AppConfig.ready (see notify/apps.py).
proposal_committed = Signal()


#: With the process-local layer, called after each change commits: the audit relay of this process
#: (approvals/relay.py) adds its `nudge` when it starts, so it reads the new events at once.
_local_wakers: list[Callable[[], None]] = []


def wake_after_commit(waker: Callable[[], None]) -> None:
    """Have `waker` called after every committed change (process-local layer only)."""
    if waker not in _local_wakers:
        _local_wakers.append(waker)


def proposal_created(proposal: Proposal) -> None:
    """Call inside the transaction that inserted `proposal` (the submit path), with the object
    as inserted: broadcast only if it commits, rendered from that object when it waits for
    review (`render_new`), so the broadcast costs no read."""
    proposal_changed(
        proposal.pk,
        proposal.action_type_id,
        created=True,
        llm_call_id=proposal.llm_call_id,
        new=proposal,
    )


def proposal_changed(
    proposal_id: uuid.UUID,
    action_type_id: int | None = None,
    *,
    created: bool = False,
    llm_call_id: uuid.UUID | None = None,
    new: Proposal | None = None,
) -> None:
    """Call inside the transaction that changed the proposal; broadcasts only if it commits.
    `created`: the proposal is new, so no long poll can be waiting on it yet; its `llm_call_id`
    goes with the announcement, so a receiver need not read a new proposal to learn it has none.
    `new`: the new proposal as inserted (see `proposal_created`)."""

    def broadcast() -> None:
        _after_commit(proposal_id, action_type_id, created, new)

    # robust: a broadcast that fails is logged; it never undoes or fails the committed change.
    transaction.on_commit(broadcast, robust=True)
    if proposal_committed.has_listeners():
        transaction.on_commit(lambda: _announce(proposal_id, created, llm_call_id))


def _announce(proposal_id: uuid.UUID, created: bool, llm_call_id: uuid.UUID | None) -> None:
    sent = proposal_committed.send_robust(
        sender=None, proposal_id=proposal_id, created=created, llm_call_id=llm_call_id
    )
    for receiver, result in sent:
        if isinstance(result, Exception):
            log.error("proposal_committed receiver %r failed", receiver, exc_info=result)


def _after_commit(
    proposal_id: uuid.UUID, action_type_id: int | None, created: bool, new: Proposal | None
) -> None:
    if uses_process_local_layer():
        for wake in _local_wakers:
            wake()  # the audit event is committed; the relay (if this is a web process) sends
        return
    if not created:
        _publish_change(proposal_id)
    if action_type_id is not None and not anyone_listening(action_type_id):
        return
    message = render_new(new) if new is not None else None
    if message is None:
        message = render_update(proposal_id)
    if message is not None and not _publish_now(message):
        _run(send_update, message)


def changes_channel() -> str:
    """The Redis pub/sub channel of changed proposals' ids. Pub/sub ignores the database
    number, so it is part of the name: two installations on one Redis do not hear each other."""
    database = redis.connection.parse_url(settings.REDIS_URL).get("db", 0)
    return f"gatehouse:proposal-changed:{database}"


_publisher: tuple[str, str, redis.Redis] | None = None  # (REDIS_URL, channel, client)


def _publish_change(proposal_id: uuid.UUID) -> None:
    """Tell the long polls of every process (one message, whoever waits). A failure is logged
    and costs waiters at most waits.RECHECK_SECONDS; it never stops the page's broadcast."""
    global _publisher
    try:
        if _publisher is None or _publisher[0] != settings.REDIS_URL:
            client = redis.Redis.from_url(
                settings.REDIS_URL, socket_connect_timeout=1, socket_timeout=2
            )
            _publisher = (settings.REDIS_URL, changes_channel(), client)
        _publisher[2].publish(_publisher[1], proposal_id.hex)
    except (OSError, redis.RedisError):
        log.warning("could not publish a change of proposal %s for long polls", proposal_id)


def render_update(proposal_id: uuid.UUID) -> dict[str, Any] | None:
    """The message for one proposal: its queue row (or its removal) and its state panel."""
    proposal = selectors.proposal_for_broadcast(proposal_id=proposal_id)
    if proposal is None:
        return None
    return _message(proposal)


def render_new(proposal: Proposal) -> dict[str, Any] | None:
    """The message for a proposal just inserted, from the object the submit inserted, when it
    waits for review; None otherwise (the caller reads it: `render_update`).

    Reading it back (`proposal_for_broadcast`: the proposal with its type, claim and reviewer,
    then its reviews) was most of a submit's broadcast: 6.6 of 7.1 ms of CPU, against 0.9 ms
    for the templates (bench/README.md, live_latency.py --load). A proposal that has just
    entered review has neither claim nor reviews, and this message goes right after its
    commit: a reviewer could only have claimed it in between by loading a page, opening the
    proposal and having the claim committed, and the service learns its id after this
    (on_commit runs before the response). A proposal decided on submit is read back: its
    execution, dispatched on the same commit, may already have moved it on.
    """
    if proposal.state != Proposal.State.PENDING_REVIEW:
        return None
    # What proposal_for_broadcast would have loaded: no claim, no reviews, the type as inserted;
    # on a copy, so that the caller's object keeps reading its relations from the database.
    fresh = copy.copy(proposal)
    Proposal.claim.related.set_cached_value(fresh, None)
    no_reviews = {"reviews": Review.objects.none()}
    fresh._prefetched_objects_cache = no_reviews  # type: ignore[attr-defined]
    return _message(fresh)


def _message(proposal: Proposal) -> dict[str, Any]:
    html = render_to_string("approvals/_live_update.html", {"p": proposal, "oob": True})
    return {
        "type": EVENT_TYPE,
        "group": group_for_action_type(proposal.action_type_id),
        "html": html,
        "raised_by": proposal.raised_by,
        "action_type_id": proposal.action_type_id,
    }


_group_publisher: tuple[Any, Any, redis.Redis] | None = None  # (layer, its naming, client)


def _publish_now(message: dict[str, Any]) -> bool:
    """From sync code (a submit, a decision) with the pub/sub layer on one Redis: the group
    message is one PUBLISH on a kept connection. `async_to_sync(send_update)` would start a
    thread, an event loop and a Redis connection per broadcast (bench/live_latency.py --load).
    False when this does not apply: the caller sends the usual way."""
    global _group_publisher
    layer = get_channel_layer()
    if not isinstance(layer, RedisPubSubChannelLayer):
        return False
    try:
        asyncio.get_running_loop()
        return False  # async code: the layer's own connection on this loop
    except RuntimeError:
        pass
    if _group_publisher is None or _group_publisher[0] is not layer:
        # The layer's own naming of a group's pub/sub channel, without a loop to run it on.
        naming = RedisPubSubLoopLayer(*layer._args, **layer._kwargs, channel_layer=layer)
        hosts = decode_hosts(layer._kwargs.get("hosts"))
        if len(hosts) != 1 or "address" not in hosts[0]:
            return False  # sharded: the layer picks the shard
        client = redis.Redis.from_url(
            hosts[0]["address"], socket_connect_timeout=1, socket_timeout=2
        )
        _group_publisher = (layer, naming, client)
    _, naming, client = _group_publisher
    body = {key: message.get(key) for key in ("type", "html", "raised_by", "action_type_id")}
    try:
        client.publish(naming._get_group_channel_name(message["group"]), layer.serialize(body))
    except (OSError, redis.RedisError):
        log.warning("could not publish the live update of %s", message["group"], exc_info=True)
    return True


async def send_update(message: dict[str, Any]) -> None:
    layer = get_channel_layer()
    if layer is None:
        return
    await layer.group_send(
        message["group"],
        {
            "type": message["type"],
            "html": message["html"],
            "raised_by": message["raised_by"],
            "action_type_id": message.get("action_type_id"),
        },
    )
