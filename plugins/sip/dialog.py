"""Dialogs (RFC 3261 §12): the state two UAs share, and the requests sent within one."""

from __future__ import annotations

from dataclasses import dataclass, field

from plugins.sip.message import SipRequest
from plugins.sip.transport import Peer


@dataclass
class Dialog:
    call_id: str
    local_tag: str
    remote_tag: str | None
    local_uri: str  # our From in requests we send (without tag)
    remote_uri: str  # their To (without tag)
    remote_target: str  # their Contact URI: the Request-URI of our in-dialog requests
    peer: Peer  # where their messages come from and ours go (symmetric, NAT-friendly)
    local_cseq: int = 1
    remote_cseq: int = 0
    route_set: list[str] = field(default_factory=list)

    @property
    def confirmed(self) -> bool:
        return self.remote_tag is not None

    def request(self, method: str, contact: str, cseq: int | None = None) -> SipRequest:
        if cseq is None:
            self.local_cseq += 1
            cseq = self.local_cseq
        req = SipRequest(method=method, uri=self.remote_target)
        req.headers.append("Via", "placeholder")
        req.headers.set_single("From", f"{self.local_uri};tag={self.local_tag}")
        to = self.remote_uri + (f";tag={self.remote_tag}" if self.remote_tag else "")
        req.headers.set_single("To", to)
        req.headers.set_single("Call-ID", self.call_id)
        req.headers.set_single("CSeq", f"{cseq} {method}")
        for route in self.route_set:
            req.headers.append("Route", route)
        if method in ("INVITE", "UPDATE"):
            req.headers.set_single("Contact", contact)
        return req


def strip_tag(value: str) -> str:
    """A From/To value without its tag parameter."""
    parts = [p for p in value.split(";") if not p.strip().lower().startswith("tag=")]
    return ";".join(parts).strip()
