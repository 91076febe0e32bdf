"""Trickle ICE over WHIP/WHEP (RFC 9725 §4.3): ``PATCH`` on a session resource with an
``application/trickle-ice-sdpfrag`` body (RFC 8840) adds the client's later candidates to
the running ICE agent. The node gathers every candidate of its own into the answer, so it
has none to send back (204). An ICE restart (new ufrag/password) is refused with 422, as
RFC 9725 has it for a session that trickles but does not restart: POST a new offer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiortc.sdp import candidate_from_sdp

from gateway.errors import BadRequest, Unprocessable

MAX_FRAG_BYTES = 16 * 1024


@dataclass
class SdpFrag:
    ufrag: str | None = None
    pwd: str | None = None
    candidates: list[tuple[str | None, str]] = field(default_factory=list)  # (mid, candidate value)
    end_of_candidates: bool = False


def parse_sdpfrag(text: str) -> SdpFrag:
    if len(text.encode()) > MAX_FRAG_BYTES:
        raise BadRequest(f"sdpfrag larger than {MAX_FRAG_BYTES} bytes", code="bad_sdpfrag")
    frag = SdpFrag()
    mid: str | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise BadRequest(f"not an SDP line: {line[:40]!r}", code="bad_sdpfrag")
        if line.startswith("m="):
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[6:]
        elif line.startswith("a=ice-ufrag:"):
            frag.ufrag = line[12:]
        elif line.startswith("a=ice-pwd:"):
            frag.pwd = line[10:]
        elif line.startswith("a=candidate:"):
            frag.candidates.append((mid, line[12:]))
        elif line == "a=end-of-candidates":
            frag.end_of_candidates = True
    return frag


def _remote_credentials(pc: Any) -> tuple[str | None, str | None]:
    ufrag = pwd = None
    description = pc.remoteDescription
    for line in (description.sdp if description else "").splitlines():
        if line.startswith("a=ice-ufrag:") and ufrag is None:
            ufrag = line[12:].strip()
        elif line.startswith("a=ice-pwd:") and pwd is None:
            pwd = line[10:].strip()
    return ufrag, pwd


async def apply(pc: Any, frag: SdpFrag) -> int:
    """Add the fragment's candidates to `pc`'s ICE transports; the number added."""
    ufrag, pwd = _remote_credentials(pc)
    if (frag.ufrag is not None and frag.ufrag != ufrag) or (frag.pwd is not None and frag.pwd != pwd):
        raise Unprocessable("ICE restarts are not supported: end the session and POST a new offer",
                            code="ice_restart_unsupported")
    transceivers = pc.getTransceivers()
    if not transceivers:
        raise Unprocessable("the session has no media to add candidates to", code="no_media")
    by_mid = {t.mid: t for t in transceivers}
    parsed = []
    for mid, value in frag.candidates:
        transceiver = by_mid.get(mid) if mid is not None else transceivers[0]
        if transceiver is None:
            raise Unprocessable(f"no media section with mid {mid!r}", code="unknown_mid")
        try:
            candidate = candidate_from_sdp(value)
        except (ValueError, IndexError) as exc:
            raise BadRequest(f"bad candidate {value[:60]!r}", code="bad_candidate") from exc
        candidate.sdpMid = transceiver.mid
        parsed.append((transceiver, candidate))
    # bundled media share one ICE transport: add each candidate to its section's transport
    for transceiver, candidate in parsed:
        await transceiver.receiver.transport.transport.addRemoteCandidate(candidate)
    if frag.end_of_candidates:
        seen = set()
        for transceiver in transceivers:
            ice_transport = transceiver.receiver.transport.transport
            if id(ice_transport) not in seen:
                seen.add(id(ice_transport))
                await ice_transport.addRemoteCandidate(None)
    return len(parsed)
