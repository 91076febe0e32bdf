"""A call: one SIP leg in a room, as a task object with a state history (LiveKit style).

States follow the seed's invite status: calling and ringing (0), connected (1), ended (2),
failed (3, with the SIP status). Every change is a ``sip.call.state`` event on the room.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from plugins.sip.dialog import Dialog
from plugins.sip.message import new_id
from plugins.sip.sdp import Origin

if TYPE_CHECKING:
    from plugins.sip.legs import MediaLeg
    from plugins.sip.service import SipService
    from plugins.sip.session_timer import SessionTimer
    from plugins.sip.transaction import ClientTransaction, ServerTransaction


class CallState(StrEnum):
    CALLING = "calling"
    RINGING = "ringing"
    CONNECTED = "connected"
    ENDED = "ended"
    FAILED = "failed"


INVITE_STATUS = {CallState.CALLING: 0, CallState.RINGING: 0, CallState.CONNECTED: 1, CallState.ENDED: 2,
                 CallState.FAILED: 3}
FINAL = (CallState.ENDED, CallState.FAILED)


@dataclass(eq=False)
class Call:
    service: SipService
    direction: str  # inbound, outbound
    room_id: str | None
    remote: str  # the other side's URI
    local: str
    caller_name: str = ""
    call_id: str = field(default_factory=lambda: f"SC_{new_id(48)}")
    state: CallState = CallState.CALLING
    sip_status: int | None = None
    reason: str = ""
    participant_id: str | None = None
    identity: str = ""
    dialog: Dialog | None = None
    leg: MediaLeg | None = None
    invite_txn: ServerTransaction | None = None  # inbound: the INVITE we answer
    client_txn: ClientTransaction | None = None  # outbound: the INVITE we sent
    history: list[dict[str, Any]] = field(default_factory=list)
    digits: list[str] = field(default_factory=list)
    gain_db: float = 0.0
    muted: bool = False
    on_hold: bool = False
    gate_id: str | None = None
    account: str | None = None
    codec: str = ""
    callback_url: str | None = None
    created_at: float = field(default_factory=time.time)
    connected_at: float | None = None
    ended_at: float | None = None
    pin_waiter: Any = None  # asyncio.Queue of digits while a PIN is being collected
    cancel_requested: bool = False
    media_port: int | None = None  # the leg's RTP port, kept: describe() runs for every event
    sdp: Origin = field(default_factory=Origin)  # our o= line and the last description we sent
    session_timer: SessionTimer | None = None  # RFC 4028, when negotiated

    def __post_init__(self) -> None:
        self.history.append({"state": self.state.value, "ts_ms": int(self.created_at * 1000)})

    @property
    def finished(self) -> bool:
        return self.state in FINAL

    def set_state(self, state: CallState, *, sip_status: int | None = None, reason: str = "") -> bool:
        if self.finished or state == self.state:
            return False
        self.state = state
        if sip_status is not None:
            self.sip_status = sip_status
        if reason:
            self.reason = reason
        now = time.time()
        if state is CallState.CONNECTED:
            self.connected_at = now
        if state in FINAL:
            self.ended_at = now
        entry: dict[str, Any] = {"state": state.value, "ts_ms": int(now * 1000)}
        if sip_status is not None:
            entry["sip_status"] = sip_status
        if reason:
            entry["reason"] = reason
        self.history.append(entry)
        self.service.call_changed(self)
        return True

    def describe(self) -> dict[str, Any]:
        leg = self.leg
        media = None
        if leg is not None:
            media = {"codec": self.codec, "local_port": self.media_port if not leg.closed else None,
                     "remote": f"{leg.remote[0]}:{leg.remote[1]}" if leg.remote else None,
                     "packets_in": leg.packets_in, "packets_out": leg.packets_out, "lost": leg.lost}
        return {"call_id": self.call_id, "direction": self.direction, "room_id": self.room_id,
                "participant_id": self.participant_id, "identity": self.identity, "state": self.state.value,
                "invite_status": INVITE_STATUS[self.state], "sip_status": self.sip_status, "reason": self.reason,
                "remote": self.remote, "local": self.local, "caller_name": self.caller_name,
                "sip_call_id": self.dialog.call_id if self.dialog else None, "gate_id": self.gate_id,
                "account": self.account, "muted": self.muted, "gain_db": self.gain_db, "on_hold": self.on_hold,
                "digits": "".join(self.digits), "history": list(self.history), "media": media,
                "session_timer": self.session_timer.describe() if self.session_timer else None,
                "created_at": self.created_at, "connected_at": self.connected_at, "ended_at": self.ended_at}

    # the participant's edge: a kick or a room close hangs up
    async def close(self, reason: str) -> None:
        await self.service.hangup(self, reason=reason, leave=False)
