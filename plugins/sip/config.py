"""``[plugins.sip]``: where the SIP edge listens, its media ports, codecs and limits."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from plugins.sip.sdp import KNOWN


class SipConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"  # address the SIP and RTP sockets bind
    port: int = Field(5060, ge=0, le=65535)  # UDP and TCP; 0 picks a free port (tests)
    tcp: bool = True
    tls_port: int | None = Field(None, ge=0, le=65535)  # TLS listener, with the two files below
    # files and folders: relative ones set in mediagate.toml are relative to that file; "" = unset
    tls_cert: Path | None = None
    tls_key: Path | None = None
    advertised_address: str = ""  # the address put in Via/Contact/SDP (NAT); default: host
    rtp_port_min: int = Field(20000, ge=0, le=65535)  # 0: let the OS pick every port
    rtp_port_max: int = Field(30000, ge=0, le=65535)
    rtp_pool_size: int = Field(32, ge=0)  # RTP socket pairs kept open ahead (off the loop); 0: open per call
    rcvbuf_bytes: int = Field(4 << 20, ge=65536)  # SO_RCVBUF of the SIP and RTP sockets
    codecs: list[str] = ["PCMU", "PCMA", "G722", "opus"]  # preference for offers; answers follow the offer
    max_calls: int = Field(500, ge=1)  # beyond this a new INVITE gets 503 + Retry-After
    retry_after_s: int = Field(5, ge=1)
    # a new INVITE also gets 503 while this many set-ups are already in progress (routing,
    # joining): the node is behind, and queueing more only makes every caller retransmit
    max_pending_setups: int = Field(200, ge=1)
    # Python's GIL switch interval while the edge runs (ms; 0 leaves the default 5 ms). The
    # loop gives the GIL away on every socket call; with the media threads busy it waits a
    # full interval to get it back, which caps the set-up rate. Lowered, never raised.
    gil_switch_interval_ms: float = Field(1.0, ge=0)
    rtp_timeout_s: float = Field(30.0, ge=0)  # no RTP for this long ends the call (0: never)
    # RFC 4028 session timers: the interval we ask for (and the most we accept: a longer one
    # asked for is reduced to it), and our Min-SE, the least we accept (a shorter one gets 422).
    # RFC 4028 puts the floor at 90 s; below it only for tests, which cannot wait minutes.
    session_expires_s: int = Field(1800, ge=1)
    session_min_se_s: int = Field(90, ge=1)
    allow_anonymous: bool = True  # accept calls not from a gate or registered account
    route_by_room_id: bool = True  # a dialled number that is a room id goes to that room
    realm: str = "mediagate"  # digest realm of the registrar
    # the challenges sent, in order. RFC 8760 phones want ["SHA-256", "MD5"]; the default is MD5
    # only because libre-based phones (Debian's baresip 1.0) fail on any SHA-256 challenge
    # (ENOSYS) even next to an MD5 one. Credentials of either algorithm are verified.
    digest_algorithms: list[str] = ["MD5"]
    register_min_expires_s: int = Field(60, ge=1)
    register_max_expires_s: int = Field(3600, ge=60)
    ring_timeout_s: float = Field(60.0, gt=0)  # dial-out: CANCEL when unanswered this long
    pin_attempts: int = Field(3, ge=1)
    pin_timeout_s: float = Field(10.0, gt=0)  # per attempt
    options_interval_s: float = Field(30.0, gt=0)  # keepalive OPTIONS to enabled gates
    prompt_dir: Path | None = None  # where prompts are made at first start; default <data_dir>/sip/prompts

    @field_validator("tls_cert", "tls_key", "prompt_dir", mode="before")
    @classmethod
    def _unset(cls, value: object) -> object:
        return None if value == "" else value  # the documented `tls_cert = ""` means no file

    @model_validator(mode="after")
    def _session_timer(self) -> SipConfig:
        if self.session_expires_s < self.session_min_se_s:
            raise ValueError(f"session_expires_s ({self.session_expires_s}) is below session_min_se_s "
                             f"({self.session_min_se_s})")
        return self

    @field_validator("digest_algorithms")
    @classmethod
    def _algorithms(cls, value: list[str]) -> list[str]:
        value = [v.upper() for v in value]
        if not value or any(v not in ("MD5", "SHA-256") for v in value):
            raise ValueError("digest_algorithms: MD5 and/or SHA-256")
        return value

    @field_validator("codecs")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        bad = [c for c in value if c.upper() not in KNOWN]
        if bad or not value:
            raise ValueError(f"unknown codecs {bad}; use {sorted(KNOWN)}")
        return value
