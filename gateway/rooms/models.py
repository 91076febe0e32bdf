"""Request and response models for rooms and participants (validate input, document the API)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gateway.media.layout.model import Canvas, Layout

ROOM_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MAX_PARTICIPANTS = 100_000  # integers are bounded to what the store and the clock hold
MAX_TIMEOUT_S = 366 * 86400


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RoomCreate(Strict):
    room_id: str | None = Field(None, pattern=ROOM_ID_PATTERN,
                                description="Custom id ([A-Za-z0-9_-], ≤64); generated when omitted")
    topic: str = Field("", max_length=256)
    max_participants: int = Field(0, ge=0, le=MAX_PARTICIPANTS,
                                  description="0 uses the node default (unlimited by default)")
    password: str | None = Field(None, min_length=1, max_length=128,
                                 description="Participants must present it to join (join-token request)")
    host_password: str | None = Field(None, min_length=1, max_length=128,
                                      description="Self-join with this one makes the joiner the host (owner "
                                      "role); the plain password never does")
    owner_id: str | None = Field(None, max_length=128, description="identity of the owner (3tee user_id)")
    host_id: str | None = Field(None, max_length=128, description="identity of the host")
    locked: bool = False
    close_when_owner_leaves: bool = False
    empty_timeout_s: int | None = Field(None, ge=0, le=MAX_TIMEOUT_S,
                                        description="Close after this long empty; null = node default")
    auto_composite: bool = False
    auto_record: bool = False
    voice_activated: bool = False
    canvas: Canvas | None = None
    layout: Layout | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class RoomUpdate(Strict):
    topic: str | None = Field(None, max_length=256)
    max_participants: int | None = Field(None, ge=0, le=MAX_PARTICIPANTS)
    password: str | None = Field(None, max_length=128, description="empty string removes the password")
    host_password: str | None = Field(None, max_length=128, description="empty string removes the host password")
    owner_id: str | None = Field(None, max_length=128)
    host_id: str | None = Field(None, max_length=128)
    locked: bool | None = None
    close_when_owner_leaves: bool | None = None
    empty_timeout_s: int | None = Field(None, ge=0, le=MAX_TIMEOUT_S)
    auto_composite: bool | None = None
    auto_record: bool | None = None
    voice_activated: bool | None = None
    metadata: dict[str, Any] | None = None


class RoomLock(Strict):
    locked: bool = True


class ParticipantUpdate(Strict):
    name: str | None = Field(None, max_length=128)
    role: int | None = Field(None, ge=0, le=0xFF)
    audio_muted: bool | None = None
    video_muted: bool | None = None
    forward_audio: bool | None = None
    forward_video: bool | None = None
    metadata: dict[str, Any] | None = None


class TrackOut(BaseModel):
    track_id: str
    kind: str
    source: str
    codec: str
    muted: bool
    width: int | None = None
    height: int | None = None


class ParticipantOut(BaseModel):
    participant_id: str
    identity: str
    name: str
    kind: str
    role: int
    state: int
    permissions: int
    audio_muted: bool
    video_muted: bool
    forward_audio: bool
    forward_video: bool
    joined_at: float
    metadata: dict[str, Any]
    tracks: list[TrackOut]


class RoomOut(BaseModel):
    room_id: str
    topic: str
    status: str
    title: str
    owner_id: str | None
    host_id: str | None
    has_password: bool
    has_host_password: bool = False
    max_participants: int
    locked: bool
    close_when_owner_leaves: bool
    empty_timeout_s: int
    auto_composite: bool
    auto_record: bool
    voice_activated: bool
    metadata: dict[str, Any]
    layout: dict[str, Any] | None
    node_id: str
    created_at: float
    participant_count: int
    participants: list[ParticipantOut]


class RoomList(BaseModel):
    rooms: list[RoomOut]
    room_count: int
    participant_count: int
