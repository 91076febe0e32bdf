"""One event bus per node: every state change is an :class:`Event`.

Observers are the ``mediagate_event`` hook (webhooks, third-party plugins) and in-process
subscribers (room WebSockets) that read from bounded queues. Emitting never blocks: a
subscriber that falls behind loses its oldest events and is told so.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from gateway.ids import random_hex

log = structlog.get_logger(__name__)

# Names from API.md; plugins may emit their own under their own prefix.
ROOM_CREATED = "room.created"
ROOM_UPDATED = "room.updated"
ROOM_CLOSED = "room.closed"
PARTICIPANT_JOINED = "participant.joined"
PARTICIPANT_LEFT = "participant.left"
PARTICIPANT_UPDATED = "participant.updated"
TRACK_PUBLISHED = "track.published"
TRACK_UNPUBLISHED = "track.unpublished"
EGRESS_STARTED = "egress.started"
EGRESS_STATUS = "egress.status"
EGRESS_FILE = "egress.file"
EGRESS_ENDED = "egress.ended"
INGRESS_STARTED = "ingress.started"
INGRESS_STATUS = "ingress.status"
INGRESS_ENDED = "ingress.ended"
SIP_CALL_STATE = "sip.call.state"
SIP_REGISTRATION_STATE = "sip.registration.state"
UPLOAD_DONE = "upload.done"
UPLOAD_FAILED = "upload.failed"
ROOM_CHAT = "room.chat"
ROOM_LAYOUT = "room.layout"
SPEAKERS_CHANGED = "room.speakers"


@dataclass(frozen=True)
class Event:
    event: str
    room_id: str | None
    data: dict[str, Any]
    id: str = field(default_factory=lambda: random_hex(128))
    ts_ms: int = field(default_factory=lambda: int(time.time() * 1000))

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "event": self.event, "room_id": self.room_id, "ts_ms": self.ts_ms,
                "data": self.data}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, separators=(",", ":"), default=str)


class Subscription:
    """A bounded queue of events for one consumer (a WebSocket), optionally for one room."""

    def __init__(self, bus: EventBus, room_id: str | None, maxsize: int) -> None:
        self._bus = bus
        self.room_id = room_id
        self.queue: asyncio.Queue[Event] = asyncio.Queue(maxsize)
        self.dropped = 0

    def offer(self, event: Event) -> None:
        if self.room_id is not None and event.room_id != self.room_id:
            return
        if self.queue.full():
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(event)

    async def get(self) -> Event:
        return await self.queue.get()

    def close(self) -> None:
        self._bus._subscriptions.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class EventBus:
    def __init__(self, deliver_hook: Callable[[Event], None] | None = None) -> None:
        self._deliver_hook = deliver_hook
        self._subscriptions: set[Subscription] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._seq = itertools.count()
        self.emitted = 0

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def subscribe(self, room_id: str | None = None, maxsize: int = 1000) -> Subscription:
        sub = Subscription(self, room_id, maxsize)
        self._subscriptions.add(sub)
        return sub

    def emit(self, name: str, room_id: str | None = None, /, **data: Any) -> Event:
        """Publish an event. Safe from any thread: off-loop calls are handed to the loop."""
        event = Event(name, room_id, data)
        if self._loop is not None and threading.get_ident() != self._loop_thread:
            self._loop.call_soon_threadsafe(self._deliver, event)
        else:
            self._deliver(event)
        return event

    def _deliver(self, event: Event) -> None:
        self.emitted += 1
        for sub in list(self._subscriptions):
            sub.offer(event)
        if self._deliver_hook is not None:
            try:
                self._deliver_hook(event)
            except Exception:  # one faulty observer must not break the emitter
                log.exception("event observer failed", event=event.event)
