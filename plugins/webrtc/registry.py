"""The node's WebRTC sessions: lookup by id and by participant, and the capacity limits."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from gateway.errors import NoCapacity, NotFound

if TYPE_CHECKING:
    from plugins.webrtc.config import WebRTCConfig
    from plugins.webrtc.session import Session


class SessionRegistry:
    def __init__(self, config: WebRTCConfig) -> None:
        self.config = config
        self.sessions: dict[str, Session] = {}
        self.pending = 0
        self.refused = 0

    @contextlib.contextmanager
    def admission(self) -> Iterator[None]:
        """Hold a slot while an offer is answered; refuse with 503 beyond the limits."""
        if len(self.sessions) + self.pending >= self.config.max_sessions:
            self.refused += 1
            raise NoCapacity(f"this node serves its maximum of {self.config.max_sessions} WebRTC sessions",
                             code="no_capacity")
        if self.pending >= self.config.max_pending:
            self.refused += 1
            raise NoCapacity("too many offers being answered at once; retry shortly", code="busy")
        self.pending += 1
        try:
            yield
        finally:
            self.pending -= 1

    def add(self, session: Session) -> None:
        self.sessions[session.session_id] = session

    def remove(self, session: Session) -> None:
        self.sessions.pop(session.session_id, None)

    def get(self, session_id: str) -> Session:
        session = self.sessions.get(session_id)
        if session is None:
            raise NotFound(f"no WebRTC session {session_id!r}", code="session_not_found")
        return session

    def of_participant(self, participant_id: str) -> list[Session]:
        return [s for s in self.sessions.values() if getattr(s, "participant_id", None) == participant_id]

    def in_room(self, room_id: str) -> list[Session]:
        return [s for s in self.sessions.values() if s.room_id == room_id]
