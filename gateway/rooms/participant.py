"""The participant model every edge fills: a browser, an OBS publisher, a SIP leg, a file
player or a test source. State and role bits follow the Juphoon control commands."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import IntFlag, StrEnum
from typing import Any, Protocol

from gateway.ids import random_hex
from gateway.security import DEFAULT_JOIN_PERMISSIONS


class ParticipantKind(StrEnum):
    WEBRTC = "webrtc"
    WHIP = "whip"
    RTMP = "rtmp"
    SIP = "sip"
    MEDIA = "media"
    TEST = "test"


class State(IntFlag):
    """``setstate`` bits: media flows to others only when both 'on' and 'forward' are set."""

    FORWARD_VIDEO = 0x1
    FORWARD_AUDIO = 0x2
    VIDEO_ON = 0x4
    AUDIO_ON = 0x8


class Role(IntFlag):
    """``setrole`` bits."""

    SENDER = 0x2  # may switch its own audio and video on
    PRESENTER = 0x4  # state changes are broadcast
    OWNER = 0x8  # the room's owner (one at a time)


DEFAULT_STATE = int(State.FORWARD_VIDEO | State.FORWARD_AUDIO | State.VIDEO_ON | State.AUDIO_ON)
DEFAULT_ROLE = int(Role.SENDER)


class Edge(Protocol):
    """What the edge that brought a participant in must offer the core."""

    async def close(self, reason: str) -> None:
        """End the participant's connection (hang up, end the WHIP session, stop playing)."""


@dataclass
class Participant:
    room_id: str
    identity: str
    kind: ParticipantKind
    name: str = ""
    participant_id: str = field(default_factory=lambda: f"PA_{random_hex(48)}")
    permissions: int = DEFAULT_JOIN_PERMISSIONS
    role: int = DEFAULT_ROLE
    state: int = DEFAULT_STATE
    joined_at: float = field(default_factory=time.time)
    metadata: dict[str, Any] = field(default_factory=dict)
    edge: Edge | None = None
    video_subscriptions: dict[str, bool] = field(default_factory=dict)  # vsubscribe target -> on

    @property
    def audio_muted(self) -> bool:
        return not self.state & State.AUDIO_ON

    @property
    def video_muted(self) -> bool:
        return not self.state & State.VIDEO_ON

    @property
    def forward_audio(self) -> bool:
        return bool(self.state & State.FORWARD_AUDIO)

    @property
    def forward_video(self) -> bool:
        return bool(self.state & State.FORWARD_VIDEO)

    @property
    def audio_flows(self) -> bool:
        """Whether others hear this participant."""
        return not self.audio_muted and self.forward_audio

    @property
    def video_flows(self) -> bool:
        return not self.video_muted and self.forward_video

    def set_state_bits(self, mask: int, value: int) -> int:
        self.state = (self.state & ~mask) | (value & mask)
        return self.state

    def set_role_bits(self, mask: int, value: int) -> int:
        self.role = (self.role & ~mask) | (value & mask)
        return self.role

    def to_dict(self, tracks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return {
            "participant_id": self.participant_id,
            "identity": self.identity,
            "name": self.name,
            "kind": self.kind.value,
            "role": self.role,
            "state": self.state,
            "permissions": self.permissions,
            "audio_muted": self.audio_muted,
            "video_muted": self.video_muted,
            "forward_audio": self.forward_audio,
            "forward_video": self.forward_video,
            "joined_at": self.joined_at,
            "metadata": self.metadata,
            "tracks": tracks or [],
        }
