"""``[plugins.rtmp]``: the RTMP ingest server and the CDN push egress."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class RtmpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="listen for RTMP publishers")
    host: str = Field("0.0.0.0", description="address the ingest server binds")
    port: int = Field(1935, ge=0, le=65535, description="0 picks a free port (tests)")
    public_host: str = Field("", description="host named in rtmp_url; empty = the node's public URL host")
    app: str = Field("live", pattern=r"^[A-Za-z0-9_\-]+$", description="application name in rtmp_url")
    handshake_timeout_s: float = Field(5.0, gt=0, description="a handshake not done by then is dropped")
    idle_timeout_s: float = Field(10.0, gt=0, description="a connection (or publisher) silent this long is dropped")
    window_ack_size: int = Field(2_500_000, ge=4096, description="bytes between acknowledgements")
    chunk_size: int = Field(4096, ge=128, le=65536, description="our outgoing chunk size")
    max_message_bytes: int = Field(8 << 20, ge=65536, description="largest audio/video message accepted")
    max_connections: int = Field(200, ge=1)
    # CDN push
    reconnect_window_s: float = Field(60.0, gt=0, description="a URL reconnects this long, then is failed")
    report_interval_s: float = Field(5.0, gt=0, description="re-report connecting/recovering this often")
    connect_timeout_s: float = Field(5.0, gt=0, description="TCP connect + handshake + publish answer")
    send_timeout_s: float = Field(5.0, gt=0, description="a CDN that accepts nothing this long is dropped")
    tls_ca_file: Path | None = Field(None, description="CA bundle for rtmps:// CDNs; empty = the system's "
                                     "(a relative path in the config file is relative to that file)")
    tls_verify: bool = Field(True, description="verify rtmps:// certificates (turn off only for tests)")
    push_queue_packets: int = Field(600, ge=16, description="per URL; beyond it video drops to the next keyframe")

    @field_validator("tls_ca_file", mode="before")
    @classmethod
    def _unset(cls, value: object) -> object:
        return None if value == "" else value  # the documented `tls_ca_file = ""`: the system's CAs
