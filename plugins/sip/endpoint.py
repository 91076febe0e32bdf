"""The SIP endpoint: transport, transactions, and dispatch to the UAS/UAC core.

Requests are matched to server transactions first (a retransmission never reaches the core);
INVITEs get 100 Trying at once (§17.2.1); CANCEL is answered here and handed to the core as
the cancellation of its INVITE (§9.2); an ACK for a 2xx stops that 2xx's retransmissions and
is passed on. Malformed requests get 400 when there is enough of them to answer.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import Protocol

import structlog

from plugins.sip import message as sipmsg
from plugins.sip.message import BadMessage, Parsed, SipRequest
from plugins.sip.transaction import ClientTransaction, ServerTransaction, TransactionTable, server_key
from plugins.sip.transport import Peer, SipTransport

log = structlog.get_logger(__name__)

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, REGISTER, UPDATE"


class Core(Protocol):
    def on_request(self, txn: ServerTransaction) -> None: ...
    def on_cancel(self, invite: ServerTransaction) -> None: ...
    def on_dialog_ack(self, parsed: Parsed, peer: Peer) -> None: ...


class Endpoint:
    def __init__(self, host: str, port: int, advertised: str, *, tcp: bool = True, rcvbuf: int = 4 << 20,
                 user_agent: str = "mediagate", tls_port: int | None = None,
                 tls_context: ssl.SSLContext | None = None) -> None:
        self.transport = SipTransport(host, port, self._received, tcp=tcp, rcvbuf=rcvbuf, tls_port=tls_port,
                                      tls_context=tls_context)
        self.advertised = advertised
        self.user_agent = user_agent
        self.table = TransactionTable()
        self.core: Core | None = None
        self._pending_ack: dict[tuple[str, int], ServerTransaction] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.bad_messages = 0

    @property
    def port(self) -> int:
        return self.transport.port

    async def start(self) -> None:
        await self.transport.start()
        self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        for txn in self.table.server.values():
            txn.cancel_timer()
        for ctx in self.table.client.values():
            ctx.stop()
        await self.transport.close()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1)
            self.table.sweep()
            for key, txn in list(self._pending_ack.items()):
                if txn.acked or txn._timer is None:  # acknowledged, or given up (timer H)
                    del self._pending_ack[key]

    # ---------------------------------------------------------------- receiving
    def _received(self, data: bytes, peer: Peer) -> None:
        resent = self.table.by_raw(data)
        if resent is not None:
            resent.retransmitted()  # O(1), no parse: what a caller resends while we are busy
            return
        try:
            parsed = sipmsg.parse(data)
        except BadMessage as exc:
            self.bad_messages += 1
            self._answer_bad(exc, peer)
            return
        if parsed.is_request:
            self._request(parsed, peer, data if peer.transport == "udp" else b"")
        else:
            ctx = self.table.client.get((parsed.branch, parsed.cseq.method))
            if ctx is not None:
                ctx.received(parsed)

    def _answer_bad(self, exc: BadMessage, peer: Peer) -> None:
        request = exc.request
        log.info("bad sip message", reason=exc.reason, peer=peer.host)
        if request is None or request.method == "ACK":
            return
        if not request.headers.get_first("via"):
            return  # nowhere to send an answer to
        try:
            reason = "Version Not Supported" if exc.status == 505 else f"Bad Request ({exc.reason[:60]})"
            out = sipmsg.response(request, exc.status, reason)
            self.transport.send(bytes(out), peer)
        except Exception:
            pass

    def _request(self, parsed: Parsed, peer: Peer, raw: bytes = b"") -> None:
        request: SipRequest = parsed.message  # type: ignore[assignment]
        method = request.method
        key = server_key(parsed)
        if method == "ACK":
            txn = self.table.server.get(key)
            if txn is not None and txn.status >= 300:
                txn.ack(parsed)  # the ACK of a non-2xx is part of the INVITE transaction
                return
            pending = self._pending_ack.pop((parsed.call_id, parsed.cseq.seq), None)
            if pending is not None:
                pending.ack(parsed)
            if self.core is not None:
                self.core.on_dialog_ack(parsed, peer)
            return
        existing = self.table.server.get(key)
        if existing is not None:
            existing.retransmitted()
            return
        txn = ServerTransaction(request, parsed, peer, self.transport.send)
        self.table.add_server(key, txn, raw)
        if method == "CANCEL":
            self._cancel(txn, parsed)
            return
        unsupported = sipmsg.unsupported_options(request)
        if unsupported:  # RFC 3261 §8.2.2.3 (ACK and CANCEL are never refused for it: handled above)
            self.respond(txn, 420, headers=[("Unsupported", ", ".join(unsupported))])
            return
        if method == "INVITE":
            trying = sipmsg.response(request, 100)
            txn.last = bytes(trying)
            self.transport.send(txn.last, peer)
        if self.core is None:
            self.respond(txn, 503)
            return
        self.core.on_request(txn)

    def _cancel(self, txn: ServerTransaction, parsed: Parsed) -> None:
        invite = self.table.server.get((parsed.branch, server_key(parsed)[1], "INVITE"))
        if invite is None or invite.finished_at is not None:
            self.respond(txn, 481)
            return
        self.respond(txn, 200)
        if self.core is not None:
            self.core.on_cancel(invite)

    # ---------------------------------------------------------------- answering
    def respond(self, txn: ServerTransaction, status: int, reason: str | None = None, *, to_tag: str | None = None,
                headers: list[tuple[str, str]] | None = None, body: bytes = b"",
                content_type: str | None = None) -> None:
        extra = list(headers or [])
        extra.append(("Server", self.user_agent))
        out = sipmsg.response(txn.request, status, reason, to_tag=to_tag, headers=extra, body=body,
                              content_type=content_type)
        if 200 <= status < 300 and txn.is_invite:
            self._pending_ack[(txn.parsed.call_id, txn.parsed.cseq.seq)] = txn
        if status < 200:
            data = bytes(out)
            txn.last = data
            self.transport.send(data, txn.peer)
            return
        txn.respond(out)

    # ---------------------------------------------------------------- sending requests
    def via(self, transport: str, branch: str) -> str:
        return f"SIP/2.0/{transport.upper()} {self.advertised}:{self.port};branch={branch};rport"

    def send_request(self, request: SipRequest, peer: Peer, on_response: Callable[[Parsed], None],
                     on_timeout: Callable[[], None], branch: str | None = None) -> ClientTransaction:
        """Send through a new client transaction; the top Via is set here."""
        branch = branch or sipmsg.new_branch()
        request.headers.remove("via")
        request.headers.append("Via", self.via(peer.transport, branch))
        if not request.headers.get_first("max-forwards"):
            request.headers.set_single("Max-Forwards", "70")
        request.headers.set_single("User-Agent", self.user_agent)
        ctx = ClientTransaction(branch, request.method, bytes(request), peer, self.transport.send,
                                on_response, on_timeout)
        if request.method != "ACK":
            self.table.client[(branch, request.method)] = ctx
            ctx.start()
        else:
            self.transport.send(ctx.data, peer)
        return ctx

    def send_ack(self, request: SipRequest, peer: Peer, branch: str | None = None) -> None:
        """ACK outside a transaction (for a 2xx: a new branch, §13.2.2.4) or of a failed INVITE."""
        branch = branch or sipmsg.new_branch()
        request.headers.remove("via")
        request.headers.append("Via", self.via(peer.transport, branch))
        request.headers.set_single("Max-Forwards", "70")
        self.transport.send(bytes(request), peer)
