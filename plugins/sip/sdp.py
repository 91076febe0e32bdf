"""SDP (RFC 4566) for one audio stream, and the offer/answer model (RFC 3264).

Only what a voice leg needs: the connection address, one ``m=audio`` line, rtpmap/fmtp,
ptime and the direction attribute. Parsing is strict about structure (a bad offer raises
:class:`SdpError`, answered 400/488 by the caller) and lenient about unknown lines.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

DIRECTIONS = ("sendrecv", "sendonly", "recvonly", "inactive")


class SdpError(ValueError):
    pass


@dataclass(frozen=True)
class Codec:
    """One audio codec as SDP names it: ``clock`` is the RTP clock rate, ``rate`` the sampling
    rate (they differ for G.722, RFC 3551 §4.5.2)."""

    name: str  # PCMU, PCMA, G722, opus
    payload_type: int
    clock: int
    rate: int
    channels: int = 1
    fmtp: str = ""

    @property
    def samples_per_packet(self) -> int:  # 20 ms at the RTP clock
        return self.clock // 50


STATIC = {0: ("PCMU", 8000, 1), 8: ("PCMA", 8000, 1), 9: ("G722", 8000, 1)}
KNOWN = {"PCMU": (8000, 8000), "PCMA": (8000, 8000), "G722": (8000, 16000), "OPUS": (48000, 48000)}
DEFAULT_PT = {"PCMU": 0, "PCMA": 8, "G722": 9, "OPUS": 111}


def codec(name: str, payload_type: int | None = None) -> Codec:
    """Our codec by name (case-insensitive), with its default payload type."""
    key = name.upper()
    if key not in KNOWN:
        raise SdpError(f"unknown codec {name!r}")
    clock, rate = KNOWN[key]
    canonical = "opus" if key == "OPUS" else key
    pt = DEFAULT_PT[key] if payload_type is None else payload_type
    return Codec(canonical, pt, clock, rate, 2 if key == "OPUS" else 1,
                 "useinbandfec=1" if key == "OPUS" else "")


@dataclass
class MediaDescription:
    """The audio stream of a session description."""

    address: str
    port: int
    payload_types: list[int]
    rtpmap: dict[int, tuple[str, int, int]] = field(default_factory=dict)  # pt -> (name, clock, channels)
    fmtp: dict[int, str] = field(default_factory=dict)
    direction: str = "sendrecv"
    ptime: int | None = None
    proto: str = "RTP/AVP"

    def codecs(self) -> list[Codec]:
        """The offered codecs we know, in the offer's order of preference."""
        found = []
        for pt in self.payload_types:
            name, clock, _channels = self.rtpmap.get(pt) or (STATIC.get(pt) or (None, 0, 1))
            if name is None or name.upper() not in KNOWN:
                continue
            ours = codec(name, pt)
            if ours.clock != clock:
                continue
            found.append(Codec(ours.name, pt, ours.clock, ours.rate, ours.channels, self.fmtp.get(pt, "")))
        return found

    def telephone_event(self) -> int | None:
        """The offer's RFC 4733 payload type at 8 kHz, if any."""
        for pt in self.payload_types:
            entry = self.rtpmap.get(pt)
            if entry and entry[0].lower() == "telephone-event" and entry[1] == 8000:
                return pt
        return None


def parse(text: str) -> MediaDescription:
    """The first audio stream of an SDP body."""
    session_address = ""
    media: MediaDescription | None = None
    session_direction = "sendrecv"
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"bad SDP line {line[:40]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            if media is not None:
                break  # only the first stream matters; the rest is declined by port 0 below
            parts = value.split()
            if len(parts) < 4 or parts[0] != "audio":
                if parts and parts[0] != "audio":
                    continue
                raise SdpError(f"bad m= line {value[:40]!r}")
            try:
                port = int(parts[1].split("/")[0])
                pts = [int(p) for p in parts[3:]]
            except ValueError as exc:
                raise SdpError(f"bad m= line {value[:40]!r}") from exc
            if not 0 <= port <= 65535 or any(not 0 <= p <= 127 for p in pts):
                raise SdpError("port or payload type out of range")
            media = MediaDescription(session_address, port, pts, proto=parts[2], direction=session_direction)
        elif kind == "c":
            parts = value.split()
            if len(parts) < 3 or parts[0] != "IN" or parts[1] not in ("IP4", "IP6"):
                raise SdpError(f"bad c= line {value[:40]!r}")
            address = parts[2].split("/")[0]
            if media is None:
                session_address = address
            else:
                media.address = address
        elif kind == "a":
            name, _, rest = value.partition(":")
            if name in DIRECTIONS:
                if media is None:
                    session_direction = name
                else:
                    media.direction = name
            elif media is None:
                continue
            elif name == "rtpmap":
                _parse_rtpmap(media, rest)
            elif name == "fmtp":
                pt, _, params = rest.partition(" ")
                if pt.isdigit():
                    media.fmtp[int(pt)] = params.strip()
            elif name == "ptime" and rest.strip().isdigit():
                media.ptime = int(rest.strip())
    if media is None:
        raise SdpError("no audio stream")
    if not media.address:
        raise SdpError("no connection address")
    return media


def _parse_rtpmap(media: MediaDescription, rest: str) -> None:
    pt, _, encoding = rest.strip().partition(" ")
    parts = encoding.split("/")
    if not pt.isdigit() or len(parts) < 2 or not parts[1].isdigit():
        return
    channels = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 1
    media.rtpmap[int(pt)] = (parts[0], int(parts[1]), channels)


@dataclass
class Answer:
    codec: Codec
    telephone_event: int | None
    direction: str


def negotiate(offer: MediaDescription, allowed: list[str]) -> Answer | None:
    """RFC 3264 §6.1: the first offered codec we allow, the offer's telephone-event payload
    type, the direction mirrored. None when nothing is in common (488)."""
    wanted = [a.upper() for a in allowed]
    chosen = next((c for c in offer.codecs() if c.name.upper() in wanted), None)
    if chosen is None or offer.port == 0:
        return None
    mirror = {"sendonly": "recvonly", "recvonly": "sendonly"}.get(offer.direction, offer.direction)
    return Answer(chosen, offer.telephone_event(), mirror)


def build(address: str, port: int, codecs: list[Codec], telephone_event: int | None,
          direction: str = "sendrecv", session_id: int | None = None, version: int = 1) -> str:
    """A session description with one audio stream offering or answering `codecs`."""
    sid = session_id if session_id is not None else int(time.time())
    family = "IP6" if ":" in address else "IP4"
    pts = [c.payload_type for c in codecs] + ([telephone_event] if telephone_event is not None else [])
    lines = ["v=0", f"o=mediagate {sid} {version} IN {family} {address}", "s=mediagate",
             f"c=IN {family} {address}", "t=0 0", f"m=audio {port} RTP/AVP {' '.join(map(str, pts))}"]
    for c in codecs:
        suffix = f"/{c.channels}" if c.channels > 1 else ""
        lines.append(f"a=rtpmap:{c.payload_type} {c.name}/{c.clock}{suffix}")
        if c.fmtp:
            lines.append(f"a=fmtp:{c.payload_type} {c.fmtp}")
    if telephone_event is not None:
        lines += [f"a=rtpmap:{telephone_event} telephone-event/8000", f"a=fmtp:{telephone_event} 0-16"]
    lines += ["a=ptime:20", f"a={direction}"]
    return "\r\n".join(lines) + "\r\n"


@dataclass
class Origin:
    """Our side of one session's descriptions (RFC 3264 §5, §8): the o= session id fixed for
    the session, the version raised by one only when the description changes, and the last
    description sent (a session refresh offers it again, version and all)."""

    session_id: int = field(default_factory=lambda: int(time.time()))
    version: int = 1
    last: str = ""

    def build(self, address: str, port: int, codecs: list[Codec], telephone_event: int | None,
              direction: str = "sendrecv") -> str:
        body = build(address, port, codecs, telephone_event, direction, self.session_id, self.version)
        if self.last and body != self.last:
            self.version += 1
            body = build(address, port, codecs, telephone_event, direction, self.session_id, self.version)
        self.last = body
        return body
