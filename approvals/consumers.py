"""The reviewer queue's websocket: forwards rendered fragments, never writes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from importlib import import_module
from typing import Any

from asgiref.sync import sync_to_async
from channels.auth import get_user
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings

from approvals import events, selectors
from approvals.relay import relay

log = logging.getLogger("gatehouse.live")

UNAUTHENTICATED = 4401
INTERNAL_ERROR = 1011


class QueueConsumer(AsyncWebsocketConsumer):
    """Joins one group per action type the reviewer may see, and follows changes to that:
    told by `events.reviewer_access_changed` (group membership, action types' groups) and
    re-reading it with the session every LIVE_SESSION_CHECK_SECONDS, it leaves the groups of
    types it may no longer see; a push for such a type still in flight is dropped. Origin is
    checked by the ASGI router (approvals/origins.py); the session by AuthMiddlewareStack."""

    groups_joined: list[str]
    type_ids: set[int]
    identities: set[str]
    presence: asyncio.Task[None] | None = None
    session_watch: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=UNAUTHENTICATED)  # before accept: the handshake gets 403
            return
        self.type_ids = await database_sync_to_async(selectors.visible_action_type_ids)(user=user)
        self.identities = selectors.reviewer_identities(user=user)
        self.groups_joined = [events.group_for_action_type(i) for i in sorted(self.type_ids)]
        self.groups_joined += [events.group_for_reviewer(user.pk), events.ALL_REVIEWERS_GROUP]
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        # Present before the handshake completes: a change committed once the page is connected
        # is pushed, not skipped as "nobody listens" (the refresh below only keeps it so).
        await sync_to_async(events.mark_listening)(sorted(self.type_ids))
        await self.accept()
        relay.ensure_started()
        self.presence = asyncio.create_task(self._stay_present())
        self.session_watch = asyncio.create_task(self._watch_session(user.pk))

    async def _follow_access(self, user: Any) -> None:
        """Join and leave action type groups to match what `user` may see now."""
        now = await database_sync_to_async(selectors.visible_action_type_ids)(user=user)
        for gone in self.type_ids - now:
            group = events.group_for_action_type(gone)
            await self.channel_layer.group_discard(group, self.channel_name)
            self.groups_joined.remove(group)
        for new in now - self.type_ids:
            group = events.group_for_action_type(new)
            await self.channel_layer.group_add(group, self.channel_name)
            self.groups_joined.append(group)
        if now - self.type_ids:
            await sync_to_async(events.mark_listening)(sorted(now - self.type_ids))
        self.type_ids = now

    async def _watch_session(self, user_id: int) -> None:
        """Close the socket once the session that opened it is no longer valid.

        Logging out closes it at once (session_ended); this catches the rest: a session that
        expired, was flushed from the store, or lost its validity (a password change), checked
        every LIVE_SESSION_CHECK_SECONDS with the session read afresh from its store. If the
        check itself fails, the socket closes with 1011, which the page retries: reconnecting
        authenticates again.
        """
        store = import_module(settings.SESSION_ENGINE).SessionStore
        session_key = self.scope["session"].session_key
        while True:
            await asyncio.sleep(settings.LIVE_SESSION_CHECK_SECONDS)
            try:
                user = await get_user({"session": store(session_key=session_key)})
            except Exception:
                log.exception("checking a reviewer socket's session failed; closing it")
                await self.close(code=INTERNAL_ERROR)
                return
            if not user.is_authenticated or user.pk != user_id:
                await self.close(code=UNAUTHENTICATED)
                return
            await self._follow_access(user)  # a change no signal announced (raw SQL, …)

    async def _stay_present(self) -> None:
        """Tell senders someone listens for these types, for as long as the socket is open."""
        while True:
            await asyncio.sleep(events.PRESENCE_REFRESH)
            await sync_to_async(events.mark_listening)(sorted(self.type_ids))

    async def disconnect(self, code: int) -> None:
        for task in (self.presence, self.session_watch):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The page has nothing to say over this socket; anything sent is ignored."""

    async def session_ended(self, event: dict[str, Any]) -> None:
        """The reviewer logged out (in this or another tab): stop pushing to this browser."""
        await self.close(code=UNAUTHENTICATED)

    async def access_changed(self, event: dict[str, Any]) -> None:
        """Who may see what changed: re-read it from the database for the session's user."""
        try:
            user = await get_user(self.scope)
            if not user.is_authenticated:
                await self.close(code=UNAUTHENTICATED)
                return
            await self._follow_access(user)
        except Exception:
            log.exception("re-reading a reviewer socket's access failed; closing it")
            await self.close(code=INTERNAL_ERROR)

    async def dispatch(self, message: dict[str, Any]) -> None:
        # A push is forwarded without touching the database, so it skips what channels does
        # before every handler: close_old_connections through sync_to_async, one hop onto the
        # process's single sync thread per socket per push (50 sockets at 100 proposals/s: 5,000
        # hops a second queued on one thread; bench/README.md, live_latency.py --load).
        if message.get("type") == events.EVENT_TYPE:
            await self.proposal_update(message)
        else:
            await super().dispatch(message)

    async def proposal_update(self, event: dict[str, Any]) -> None:
        if event.get("raised_by") and event["raised_by"] in self.identities:
            return
        if event.get("action_type_id") not in (None, *self.type_ids):
            return  # sent before this socket left the type's group
        await self.send(text_data=event["html"])
