"""``[plugins.play]``: where local files may come from, the silent track, the end-event
delay and the reconnect schedule."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class PlayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allowed_dirs: list[Path] = Field(default_factory=list, description=(
        "directories a request may name local files in (besides uploads, always allowed by file_id); "
        "empty: only uploaded files and network URLs"))
    schemes: list[str] = Field(default_factory=lambda: ["http", "https", "rtmp", "rtmps", "rtsp"],
                               description="network URL schemes a request may use")
    mock_audio: bool = Field(True, description=(
        "publish a silent audio track when the source has none (3tee auto_publish_mock_audio); "
        "a request can override it"))
    end_event_delay_s: float = Field(2.0, ge=0, le=60, description=(
        "after the last loop, hold the last picture this long before leaving and sending ingress.ended "
        "(3tee stop_event_notify_delay_time)"))
    retry_delays_s: list[float] = Field(default_factory=lambda: [0.0, 1.0, 3.0], description=(
        "a broken network source is reopened after each of these delays (TRTC: 0, 1, 3 s), then fails"))
    open_timeout_s: float = Field(10.0, gt=0, description="connect / read timeout for network sources")
    audio_lead_s: float = Field(0.05, ge=0, le=0.5, description="audio is pushed this much ahead of its time")

    @field_validator("schemes")
    @classmethod
    def _schemes(cls, value: list[str]) -> list[str]:
        allowed = {"http", "https", "rtmp", "rtmps", "rtsp"}
        unknown = set(value) - allowed
        if unknown:
            raise ValueError(f"unsupported schemes {sorted(unknown)}; choose from {sorted(allowed)}")
        return value
