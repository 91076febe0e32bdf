"""SIP transactions (RFC 3261 §17), small and strict about matching.

aiosipua matched retransmissions to nothing: an INVITE resent while ringing made a second
dialog, one resent after the 200 got 481, so did a resent BYE. Here every request is matched
by (branch, sent-by, method) (§17.2.3, ACK matching its INVITE) before the core sees it; a
retransmission gets the transaction's last response again and never reaches the core.

Server INVITE transactions also carry the 2xx retransmission of §13.3.1.4 (until the ACK of
the dialog arrives) so one object answers every resend of a call set-up. Finished
transactions are kept for 32 s (timers H/J) and swept once a second rather than each having
its own timer: at hundreds of calls a second that is the cheaper way.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from plugins.sip.message import Parsed, SipRequest, SipResponse
from plugins.sip.transport import Peer

T1 = 0.5
T2 = 4.0
LINGER = 32.0  # 64*T1: how long a finished transaction still absorbs retransmissions

Send = Callable[[bytes, Peer], None]


def server_key(parsed: Parsed) -> tuple[str, str, str]:
    method = parsed.cseq.method
    if method == "ACK":
        method = "INVITE"
    via = parsed.via
    return parsed.branch, f"{via.host}:{via.port or ''}", method


@dataclass(eq=False)
class ServerTransaction:
    request: SipRequest
    parsed: Parsed
    peer: Peer
    send: Send
    last: bytes | None = None
    status: int = 0
    acked: bool = False
    finished_at: float | None = None
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    _interval: float = T1
    on_ack: Callable[[Parsed], None] | None = None
    on_timeout: Callable[[], None] | None = None
    _deadline: float = 0.0
    created: float = field(default_factory=time.monotonic)
    raw: bytes = field(default=b"", repr=False)  # the request as received, to spot resends unparsed

    @property
    def is_invite(self) -> bool:
        return self.parsed.cseq.method == "INVITE"

    def respond(self, response: SipResponse) -> None:
        if self.finished_at is not None:
            return  # one final response per transaction
        data = bytes(response)
        self.last = data
        self.status = response.status_code
        self.send(data, self.peer)
        if response.status_code >= 200:
            self.finished_at = time.monotonic()
            if self.is_invite and self.peer.transport == "udp":
                self._interval = T1
                self._deadline = self.finished_at + LINGER
                self._arm()

    def _arm(self) -> None:
        self._timer = asyncio.get_running_loop().call_later(self._interval, self._retransmit)

    def _retransmit(self) -> None:
        self._timer = None
        if self.acked or self.last is None:
            return
        if time.monotonic() >= self._deadline:
            if self.on_timeout is not None:  # timer H / no ACK for our 2xx: the dialog is dead
                self.on_timeout()
            return
        self.send(self.last, self.peer)
        self._interval = min(self._interval * 2, T2)
        self._arm()

    def retransmitted(self) -> None:
        """The request came again: answer with the last response (§17.2.1, §17.2.2)."""
        if self.last is not None:
            self.send(self.last, self.peer)

    def ack(self, parsed: Parsed) -> None:
        if self.acked:
            return
        self.acked = True
        self.cancel_timer()
        if self.on_ack is not None:
            self.on_ack(parsed)

    def cancel_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


@dataclass(eq=False)
class ClientTransaction:
    """A request we sent: retransmitted over UDP (timers A/E) until a response, 408 at 32 s."""

    branch: str
    method: str
    data: bytes
    peer: Peer
    send: Send
    on_response: Callable[[Parsed], None]
    on_timeout: Callable[[], None]
    final: int = 0
    _timer: asyncio.TimerHandle | None = field(default=None, repr=False)
    _interval: float = T1
    _deadline: float = 0.0
    provisional: bool = False

    def start(self) -> None:
        self.send(self.data, self.peer)
        self._deadline = time.monotonic() + LINGER
        self._arm()

    def _arm(self) -> None:
        delay = self._interval if self.peer.transport == "udp" else LINGER
        self._timer = asyncio.get_running_loop().call_later(delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        if self.final:
            return
        if time.monotonic() >= self._deadline:
            self.final = 408
            self.on_timeout()
            return
        if self.peer.transport == "udp" and not (self.method == "INVITE" and self.provisional):
            self.send(self.data, self.peer)
            cap = T2 if self.method != "INVITE" else LINGER
            self._interval = min(self._interval * 2, cap)
        else:
            self._interval = T2
        self._arm()

    def received(self, parsed: Parsed) -> None:
        status = parsed.message.status_code  # type: ignore[union-attr]
        if status < 200:
            self.provisional = True
            if self.method == "INVITE":  # timer C of a proxy is not ours: wait up to the deadline
                self._deadline = time.monotonic() + 180
        elif not self.final:
            self.final = status
            self.stop()
        elif self.method != "INVITE":
            return  # a retransmitted final response to a non-INVITE: absorbed
        self.on_response(parsed)

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


class TransactionTable:
    """Server and client transactions by key. Server ones are also queued by when to look at
    them again, so the once-a-second sweep touches only those due (O(1) per transaction,
    not a scan of the tens of thousands a 32 s linger keeps at hundreds of calls a second)."""

    def __init__(self) -> None:
        self.server: dict[tuple[str, str, str], ServerTransaction] = {}
        self.client: dict[tuple[str, str], ClientTransaction] = {}
        self._due: deque[tuple[float, tuple[str, str, str], ServerTransaction]] = deque()
        self.raw: dict[bytes, ServerTransaction] = {}

    def add_server(self, key: tuple[str, str, str], txn: ServerTransaction, raw: bytes = b"") -> None:
        self.server[key] = txn
        self._due.append((txn.created + LINGER, key, txn))
        if raw:
            txn.raw = raw
            self.raw[raw] = txn

    def by_raw(self, data: bytes) -> ServerTransaction | None:
        """A byte-identical retransmission (the usual kind over UDP), found before parsing it."""
        return self.raw.get(data)

    def sweep(self) -> None:
        now = time.monotonic()
        due = self._due
        while due and due[0][0] <= now:
            _, key, txn = due.popleft()
            if self.server.get(key) is not txn:
                continue
            # a finished one lingers (timers H/J); one the core never answered goes after 300 s
            expires = txn.finished_at + LINGER if txn.finished_at is not None else txn.created + 300
            if now >= expires:
                txn.cancel_timer()
                del self.server[key]
                if txn.raw:
                    self.raw.pop(txn.raw, None)
            else:
                due.append((expires, key, txn))
        for key, ctx in list(self.client.items()):
            if ctx.final and ctx._timer is None and now > ctx._deadline:
                del self.client[key]
