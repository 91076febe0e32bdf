"""RoomService: the one place room and participant state changes, whoever asks (REST,
WebSocket commands, edges, compatibility plugins). Every change is an event."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import structlog

from gateway import events as ev
from gateway.errors import Conflict, Forbidden, NoCapacity, NotFound
from gateway.media.layout.model import Layout
from gateway.rooms.models import ParticipantUpdate, RoomCreate, RoomUpdate
from gateway.rooms.participant import Participant, ParticipantKind, Role, State
from gateway.rooms.room import Room
from gateway.security import DEFAULT_JOIN_PERMISSIONS, Permission, hash_secret_async, verify_secret, verify_secret_async

if TYPE_CHECKING:
    from gateway.config import Config
    from gateway.events import EventBus
    from gateway.ratelimit import FailureLimiter
    from gateway.store import Store

log = structlog.get_logger(__name__)

# Settings kept in the rooms.settings JSON column (the rest have their own columns).
_SETTING_KEYS = ("close_when_owner_leaves", "empty_timeout_s", "auto_composite", "auto_record",
                 "voice_activated", "canvas", "metadata")
_URI = re.compile(r"^\[?\s*(?:username:)?([^@\]\s]+)(?:@[^\]]*)?\]?$")

CloseHook = Callable[[Room, str], Awaitable[None]]


class RoomService:
    def __init__(self, store: Store, events: EventBus, config: Config, *, node_id: str) -> None:
        self.store = store
        self.events = events
        self.config = config
        self.node_id = node_id
        self.rooms: dict[str, Room] = {}
        self.media: Any | None = None  # gateway.media.engine.MediaService, set by the node
        self._close_hooks: list[CloseHook] = []
        self._loaded = False
        self.failures: FailureLimiter | None = None  # failed room-password attempts, set by the node

    # ------------------------------------------------------------------ lifecycle
    async def load(self) -> None:
        """Bring open rooms from the store back into memory (empty; edges rejoin)."""
        for row in await self.store.list_rooms("open"):
            room = Room(row)
            self.rooms[room.room_id] = room
            self._arm_empty_timer(room)
        self._loaded = True

    def on_close(self, hook: CloseHook) -> None:
        """Register a coroutine run when a room closes (egress/ingress stop their tasks)."""
        self._close_hooks.append(hook)

    async def shutdown(self) -> None:
        for room in list(self.rooms.values()):
            if room.close_timer:
                room.close_timer.cancel()
            for participant in list(room.participants.values()):
                await self._close_edge(participant, "node_shutdown")
            if room.media is not None and self.media is not None:
                await self.media.release(room)

    # ------------------------------------------------------------------ rooms
    async def create(self, request: RoomCreate, *, creator: str | None = None) -> Room:
        limit = self.config.rooms.max_rooms
        if limit and len(self.rooms) >= limit:
            raise NoCapacity(f"this node holds its maximum of {limit} rooms", code="no_capacity")
        room_id = request.room_id or secrets.token_hex(6)
        if room_id in self.rooms or await self.store.get_room(room_id):
            raise Conflict(f"room {room_id!r} already exists", code="room_exists", field="room_id")
        settings = {key: getattr(request, key) for key in _SETTING_KEYS}
        if request.canvas is not None:
            settings["canvas"] = request.canvas.model_dump()
        if request.host_password:
            settings["host_password_hash"] = await hash_secret_async(request.host_password)
        values = {
            "room_id": room_id,
            "topic": request.topic,
            "owner_id": request.owner_id or creator,
            "host_id": request.host_id,
            "password_hash": await hash_secret_async(request.password) if request.password else None,
            "max_participants": request.max_participants,
            "locked": request.locked,
            "settings": settings,
            "layout": request.layout.model_dump() if request.layout else None,
        }
        row = await self.store.create_room(values)
        room = Room(row)
        self.rooms[room_id] = room
        self._arm_empty_timer(room)
        self.events.emit(ev.ROOM_CREATED, room_id, room=self.describe(room, participants=False))
        log.info("room created", room_id=room_id)
        return room

    async def get(self, room_id: str) -> Room:
        room = self.rooms.get(room_id)
        if room is None:
            raise NotFound(f"room {room_id!r} does not exist", code="room_not_found", field="room_id")
        return room

    def list(self) -> list[Room]:
        return list(self.rooms.values())

    async def update(self, room_id: str, request: RoomUpdate) -> Room:
        room = await self.get(room_id)
        changes: dict[str, Any] = {}
        settings = dict(room.settings)
        patch = request.model_dump(exclude_unset=True)
        for key, value in patch.items():
            if key == "password":
                changes["password_hash"] = await hash_secret_async(value) if value else None
            elif key == "host_password":
                settings.pop("host_password_hash", None)
                if value:
                    settings["host_password_hash"] = await hash_secret_async(value)
            elif key in _SETTING_KEYS:
                settings[key] = value
            elif value is not None:
                changes[key] = value
        if settings != room.settings:
            changes["settings"] = settings
        if changes:
            await self.store.update_room(room_id, changes)
            room.record.update(changes)
        if "empty_timeout_s" in patch:
            self._arm_empty_timer(room)
        self.events.emit(ev.ROOM_UPDATED, room_id, changes=sorted(patch))
        return room

    async def set_locked(self, room_id: str, locked: bool) -> Room:
        return await self.update(room_id, RoomUpdate(locked=locked))

    async def set_title(self, room_id: str, title: str) -> Room:
        room = await self.get(room_id)
        room.title = title
        self.events.emit(ev.ROOM_UPDATED, room_id, changes=["title"], title=title)
        return room

    async def close(self, room_id: str, reason: str = "closed") -> Room:
        """End the meeting: everyone is removed, tasks stop, the room stays on record as closed.

        The work runs as its own task: a caller that goes away (a client hanging up) cannot
        leave the room half-closed, and concurrent closes wait for the same task."""
        room = await self.get(room_id)
        if room.closing is None:
            room.closing = asyncio.get_running_loop().create_task(self._close(room, reason),
                                                                  name=f"close-room-{room_id}")
        return await asyncio.shield(room.closing)

    async def _close(self, room: Room, reason: str) -> Room:
        room_id = room.room_id
        room.record["status"] = "closing"
        if room.close_timer:
            room.close_timer.cancel()
            room.close_timer = None
        for participant in list(room.participants.values()):
            await self._close_edge(participant, "room_closed")
            await self._remove(room, participant, "room_closed")
        for hook in self._close_hooks:
            try:
                await hook(room, reason)
            except Exception:
                log.exception("room close hook failed", room_id=room_id)
        if room.media is not None and self.media is not None:
            await self.media.release(room)
        now = time.time()
        await self.store.update_room(room_id, {"status": "closed", "closed_at": now})
        room.record.update(status="closed", closed_at=now)
        self.rooms.pop(room_id, None)
        self.events.emit(ev.ROOM_CLOSED, room_id, reason=reason)
        log.info("room closed", room_id=room_id, reason=reason)
        return room

    async def delete(self, room_id: str) -> None:
        if room_id in self.rooms:
            await self.close(room_id, "deleted")
        if not await self.store.delete_room(room_id):
            raise NotFound(f"room {room_id!r} does not exist", code="room_not_found", field="room_id")

    def check_password(self, room: Room, password: str | None) -> None:
        """Blocking check (runs the KDF on the caller's thread); prefer admit_with_password."""
        stored = room.record.get("password_hash")
        if stored and not (password and verify_secret(password, stored)):
            raise Forbidden("wrong or missing room password", code="bad_password", field="password")

    async def admit_with_password(self, room: Room, password: str | None, *, client: str = "") -> str:
        """Which admission a password gives: ``"host"`` (the host password) or ``"password"``.

        The KDF runs on a worker thread; failed attempts are limited per client address and per
        room (429 with Retry-After once spent), checked before any KDF runs."""
        target = "room:" + room.room_id
        if self.failures is not None:
            self.failures.check(client, target)
        host_hash = room.setting("host_password_hash")
        plain_hash = room.record.get("password_hash")
        admission = None
        if password:
            if host_hash and await verify_secret_async(password, host_hash):
                admission = "host"
            elif plain_hash and await verify_secret_async(password, plain_hash):
                admission = "password"
        if admission is not None:
            if self.failures is not None:
                self.failures.succeeded(client, target)
            return admission
        raise Forbidden("wrong or missing room password", code="bad_password", field="password")

    # ------------------------------------------------------------------ layout
    async def set_layout(self, room_id: str, layout: Layout) -> Room:
        room = await self.get(room_id)
        if self.media is not None:
            self.media.validate_layout(room, layout)
        data = layout.model_dump()
        await self.store.update_room(room_id, {"layout": data})
        room.record["layout"] = data
        if self.media is not None:
            self.media.layout_changed(room)
        self.events.emit(ev.ROOM_LAYOUT, room_id, template=layout.template, regions=len(layout.regions))
        return room

    # ------------------------------------------------------------------ participants
    async def join(self, room_id: str, identity: str, *, kind: ParticipantKind | str, name: str = "",
                   permissions: int = DEFAULT_JOIN_PERMISSIONS, edge: Any = None,
                   metadata: dict[str, Any] | None = None, operator: bool = False,
                   admission: str | None = None) -> Participant:
        """Add a participant. ``admission`` is the join token's (``Principal.admission``): a
        password self-join ("password") never gets the owner role and, like "host", never
        replaces a connected identity (409); an operator-issued token (None) replaces one of
        the same kind, as LiveKit does."""
        room = await self.get(room_id)
        async with room.lock:
            if not room.is_open:
                raise Forbidden(f"room {room_id!r} is closed", code="room_closed")
            if room.record.get("locked") and not operator:
                raise Forbidden(f"room {room_id!r} is locked", code="room_locked")
            kind = ParticipantKind(kind)
            if admission is not None and room.by_identity(identity):
                raise Conflict(f"a participant with identity {identity!r} is already connected",
                               code="identity_connected", field="identity")
            replaced = [p for p in room.by_identity(identity) if p.kind is kind]
            limit = room.record.get("max_participants") or self.config.rooms.max_participants
            if limit and len(room.participants) - len(replaced) >= limit:
                raise Forbidden(f"room {room_id!r} is full ({limit} participants)", code="room_full")
            participant = Participant(room_id=room_id, identity=identity, kind=kind, name=name or identity,
                                      permissions=permissions, edge=edge, metadata=metadata or {})
            if admission == "host" or (admission is None and identity in (room.record.get("owner_id"),
                                                                           room.record.get("host_id"))):
                participant.role |= Role.OWNER | Role.PRESENTER
            room.participants[participant.participant_id] = participant
            if room.close_timer:
                room.close_timer.cancel()
                room.close_timer = None
        # LiveKit's rule: the same identity joining again over the same kind replaces the old one
        for old in replaced:
            await self._close_edge(old, "duplicate_identity")
            await self._remove(room, old, "duplicate_identity")
        self.events.emit(ev.PARTICIPANT_JOINED, room_id, participant=participant.to_dict())
        if self.media is not None and room.media is not None:
            room.media.participants_changed()
        return participant

    async def leave(self, room_id: str, participant_id: str, reason: str = "left") -> None:
        room = self.rooms.get(room_id)
        if room is None:
            return
        participant = room.participants.get(participant_id)
        if participant is None:
            return
        await self._remove(room, participant, reason)
        owner = room.record.get("owner_id") or room.record.get("host_id")
        if (room.setting("close_when_owner_leaves") and owner and participant.identity == owner
                and not room.by_identity(owner)):
            await self.close(room_id, "owner_left")
            return
        if not room.participants:
            self._arm_empty_timer(room)

    async def _remove(self, room: Room, participant: Participant, reason: str) -> None:
        if room.participants.pop(participant.participant_id, None) is None:
            return
        if room.media is not None:
            room.media.participant_left(participant.participant_id)
        self.events.emit(ev.PARTICIPANT_LEFT, room.room_id, participant_id=participant.participant_id,
                         identity=participant.identity, reason=reason)

    async def _close_edge(self, participant: Participant, reason: str) -> None:
        if participant.edge is None:
            return
        try:
            await asyncio.wait_for(participant.edge.close(reason), timeout=5)
        except Exception:
            log.exception("edge close failed", participant_id=participant.participant_id)

    async def kick(self, room_id: str, participant_id: str) -> None:
        room = await self.get(room_id)
        participant = self.participant(room, participant_id)
        # leave first: when the edge ends it may try to leave too, and must find nothing to do
        await self.leave(room_id, participant.participant_id, "kicked")
        await self._close_edge(participant, "kicked")

    def participant(self, room: Room, target: str) -> Participant:
        """Find a participant by id, identity, or a Juphoon-style ``[username:id@domain]`` URI."""
        found = room.participants.get(target)
        if found:
            return found
        match = _URI.match(target.strip())
        identity = match.group(1) if match else target
        for candidate in room.participants.values():
            if candidate.identity in (identity, target):
                return candidate
        raise NotFound(f"participant {target!r} is not in room {room.room_id!r}",
                       code="participant_not_found", field="participant_id")

    async def update_participant(self, room_id: str, participant_id: str,
                                 patch: ParticipantUpdate) -> Participant:
        room = await self.get(room_id)
        participant = self.participant(room, participant_id)
        changes = patch.model_dump(exclude_unset=True)
        if "name" in changes and changes["name"] is not None:
            participant.name = changes["name"]
        if changes.get("role") is not None:
            participant.role = changes["role"]
        if changes.get("metadata") is not None:
            participant.metadata = changes["metadata"]
        bits = {"audio_muted": (State.AUDIO_ON, True), "video_muted": (State.VIDEO_ON, True),
                "forward_audio": (State.FORWARD_AUDIO, False), "forward_video": (State.FORWARD_VIDEO, False)}
        mask = value = 0
        for key, (bit, inverted) in bits.items():
            if changes.get(key) is not None:
                mask |= bit
                if bool(changes[key]) != inverted:
                    value |= bit
        if mask:
            self.apply_state(room, participant, mask, value)
        self.events.emit(ev.PARTICIPANT_UPDATED, room_id, participant=participant.to_dict(),
                         changes=sorted(changes))
        return participant

    def apply_state(self, room: Room, participant: Participant, mask: int, value: int) -> None:
        """Change state bits and make the media follow (mute = nothing flows to others)."""
        if value & State.AUDIO_ON & mask and not participant.permissions & Permission.SEND_AUDIO:
            raise Forbidden("no permission to send audio", code="permission_denied", field="state")
        if value & State.VIDEO_ON & mask and not participant.permissions & Permission.SEND_VIDEO:
            raise Forbidden("no permission to send video", code="permission_denied", field="state")
        participant.set_state_bits(mask, value)
        if room.media is not None:
            room.media.participant_state_changed(participant)

    # ------------------------------------------------------------------ empty timeout
    def _arm_empty_timer(self, room: Room) -> None:
        if room.close_timer:
            room.close_timer.cancel()
            room.close_timer = None
        timeout = room.setting("empty_timeout_s")
        if timeout is None:
            timeout = self.config.rooms.empty_timeout_s
        if not timeout or room.participants:
            return
        loop = asyncio.get_running_loop()
        room.close_timer = loop.call_later(timeout, self._empty_timeout, room.room_id)

    def _empty_timeout(self, room_id: str) -> None:
        room = self.rooms.get(room_id)
        if room is not None and not room.participants and room.is_open:
            asyncio.get_running_loop().create_task(self.close(room_id, "empty_timeout"))

    # ------------------------------------------------------------------ views
    def describe(self, room: Room, participants: bool = True) -> dict[str, Any]:
        record = room.record
        timeout = room.setting("empty_timeout_s")
        return {
            "room_id": room.room_id,
            "topic": record.get("topic", ""),
            "status": record.get("status", "open"),
            "title": room.title,
            "owner_id": record.get("owner_id"),
            "host_id": record.get("host_id"),
            "has_password": bool(record.get("password_hash")),
            "has_host_password": bool(room.setting("host_password_hash")),
            "max_participants": record.get("max_participants") or 0,
            "locked": bool(record.get("locked")),
            "close_when_owner_leaves": bool(room.setting("close_when_owner_leaves", False)),
            "empty_timeout_s": self.config.rooms.empty_timeout_s if timeout is None else timeout,
            "auto_composite": bool(room.setting("auto_composite", False)),
            "auto_record": bool(room.setting("auto_record", False)),
            "voice_activated": bool(room.setting("voice_activated", False)),
            "metadata": room.setting("metadata") or {},
            "layout": record.get("layout"),
            "node_id": self.node_id,
            "created_at": record.get("created_at"),
            "participant_count": len(room.participants),
            "participants": [self.describe_participant(room, p) for p in room.participants.values()]
            if participants else [],
        }

    def describe_participant(self, room: Room, participant: Participant) -> dict[str, Any]:
        tracks = room.media.track_infos(participant.participant_id) if room.media is not None else []
        return participant.to_dict(tracks)
