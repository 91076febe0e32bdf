"""A room at runtime: its stored settings, who is in it, and its media engine."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from gateway.media.layout.model import Layout
from gateway.rooms.participant import Participant


@dataclass
class Room:
    record: dict[str, Any]  # the stored row
    participants: dict[str, Participant] = field(default_factory=dict)
    title: str = ""
    media: Any | None = None  # gateway.media.engine.RoomMedia once someone needs media
    close_timer: asyncio.TimerHandle | None = None
    closing: asyncio.Task[Room] | None = None  # the close in progress, once one started
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def room_id(self) -> str:
        return self.record["room_id"]

    @property
    def settings(self) -> dict[str, Any]:
        return self.record.get("settings") or {}

    def setting(self, key: str, default: Any = None) -> Any:
        return self.settings.get(key, default)

    @property
    def is_open(self) -> bool:
        return self.record.get("status") == "open"

    @property
    def layout(self) -> Layout | None:
        raw = self.record.get("layout")
        return Layout.model_validate(raw) if raw else None

    def by_identity(self, identity: str) -> list[Participant]:
        return [p for p in self.participants.values() if p.identity == identity]
