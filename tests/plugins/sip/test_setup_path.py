"""Unit tests of the call set-up path's bookkeeping: the transaction sweep touches only what
is due and forgets finished transactions after their linger, a byte-identical resend is
answered from the transaction without parsing, and the RTP port pool hands out ready pairs."""

from __future__ import annotations

import asyncio
import socket

from plugins.sip import transaction as txmod
from plugins.sip.endpoint import Endpoint
from plugins.sip.portpool import PortPool
from plugins.sip.rtp import PortAllocator
from plugins.sip.transport import Peer

INVITE = ("INVITE sip:bench@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK{n}\r\n"
          "From: <sip:a@127.0.0.1>;tag=f{n}\r\nTo: <sip:bench@127.0.0.1>\r\nCall-ID: c{n}@t\r\n"
          "CSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n")


class CountingCore:
    def __init__(self) -> None:
        self.requests: list[txmod.ServerTransaction] = []

    def on_request(self, txn: txmod.ServerTransaction) -> None:
        self.requests.append(txn)

    def on_cancel(self, invite: txmod.ServerTransaction) -> None: ...
    def on_dialog_ack(self, parsed: object, peer: Peer) -> None: ...


async def test_resend_answered_unparsed_and_swept_after_linger(monkeypatch) -> None:
    endpoint = Endpoint("127.0.0.1", 0, "127.0.0.1", tcp=False)
    core = CountingCore()
    endpoint.core = core  # type: ignore[assignment]
    await endpoint.start()
    peer_sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    peer_sock.bind(("127.0.0.1", 0))
    peer_sock.settimeout(5)
    port = peer_sock.getsockname()[1]
    try:
        peer = Peer("udp", "127.0.0.1", port)
        data = [INVITE.format(port=port, n=n).encode() for n in range(3)]
        for raw in data:
            endpoint._received(raw, peer)
        assert len(core.requests) == 3
        endpoint.respond(core.requests[0], 486)
        for _ in range(4):
            peer_sock.recv(4096)  # three 100 Trying and the 486
        # the resend must not reach the parser
        monkeypatch.setattr("plugins.sip.message.parse", lambda _d: (_ for _ in ()).throw(AssertionError("parsed")))
        endpoint._received(data[0], peer)
        assert peer_sock.recv(4096).startswith(b"SIP/2.0 486")  # the last response again
        assert len(core.requests) == 3
        monkeypatch.undo()
        # 40 s later: the finished one is gone (and its raw bytes); unanswered ones stay till 300 s
        later = txmod.time.monotonic() + 40
        monkeypatch.setattr(txmod.time, "monotonic", lambda: later)
        endpoint.table.sweep()
        assert len(endpoint.table.server) == 2 and data[0] not in endpoint.table.raw
        assert len(endpoint.table._due) == 2  # re-queued for their own expiry, not rescanned each second
    finally:
        peer_sock.close()
        await endpoint.close()


async def test_port_pool_hands_out_ready_pairs() -> None:
    pool = PortPool(PortAllocator(0, 0, "127.0.0.1", 65536), size=4)
    pool.start()
    try:
        for _ in range(50):
            if len(pool._spare) == 4:
                break
            await asyncio.sleep(0.05)
        assert len(pool._spare) == 4
        pairs = [pool.take() for _ in range(6)]  # more than it holds: the rest opened on demand
        ports = {p for _, _, p in pairs}
        assert len(ports) == 6 and all(rtp.getsockname()[1] == p for rtp, _, p in pairs)
        for rtp_sock, rtcp_sock, _ in pairs:
            rtp_sock.close()
            rtcp_sock.close()
    finally:
        pool.close()
    assert not pool._spare
