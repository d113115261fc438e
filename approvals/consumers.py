"""The reviewer queue's websocket: forwards rendered fragments, never writes."""

from __future__ import annotations

from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer

from approvals import events, selectors
from approvals.relay import relay

UNAUTHENTICATED = 4401


class QueueConsumer(AsyncWebsocketConsumer):
    """Joins one group per action type the reviewer may see. Origin is checked by the ASGI
    router (AllowedHostsOriginValidator); the session by AuthMiddlewareStack."""

    groups_joined: list[str]
    identities: set[str]

    async def connect(self) -> None:
        user = self.scope.get("user")
        if user is None or not user.is_authenticated:
            await self.close(code=UNAUTHENTICATED)  # before accept: the handshake gets 403
            return
        type_ids = await database_sync_to_async(selectors.visible_action_type_ids)(user=user)
        self.identities = selectors.reviewer_identities(user=user)
        self.groups_joined = [events.group_for_action_type(i) for i in sorted(type_ids)]
        self.groups_joined.append(events.group_for_reviewer(user.pk))
        for group in self.groups_joined:
            await self.channel_layer.group_add(group, self.channel_name)
        await self.accept()
        relay.ensure_started()

    async def disconnect(self, code: int) -> None:
        for group in getattr(self, "groups_joined", []):
            await self.channel_layer.group_discard(group, self.channel_name)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """The page has nothing to say over this socket; anything sent is ignored."""

    async def session_ended(self, event: dict[str, Any]) -> None:
        """The reviewer logged out (in this or another tab): stop pushing to this browser."""
        await self.close(code=UNAUTHENTICATED)

    async def proposal_update(self, event: dict[str, Any]) -> None:
        if event.get("raised_by") and event["raised_by"] in self.identities:
            return
        await self.send(text_data=event["html"])
