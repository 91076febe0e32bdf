"""Gates: trunks to PBXs and carriers. Outbound REGISTER with digest auth and refresh
(RFC 3261 §10.2), OPTIONS keepalive, enabled/disabled (the seed's status), and the
addresses an inbound call must come from to count as the gate's.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from aiosipua.auth import SipDigestAuth, answer_challenge

from gateway.events import SIP_REGISTRATION_STATE
from plugins.sip import message as sipmsg
from plugins.sip.message import Parsed, SipRequest
from plugins.sip.transport import Peer

if TYPE_CHECKING:
    from plugins.sip.service import SipService

log = structlog.get_logger(__name__)

RETRY_S = 30.0


@dataclass
class Gate:
    gate_id: str
    name: str
    host: str
    port: int = 5060
    transport: str = "udp"
    register: bool = False
    username: str | None = None
    password: str | None = None
    realm: str | None = None
    expires_s: int = 600
    enabled: bool = True
    codecs: list[str] | None = None
    from_domain: str | None = None
    address: str = ""  # host resolved
    registration: str = "none"  # none, registering, registered, failed, unregistered
    reachable: bool | None = None
    last_status: int | None = None
    registered_expires: int | None = None
    refreshes: int = 0
    task: asyncio.Task[None] | None = field(default=None, repr=False)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Gate:
        cfg = row["config"]
        known = {k: cfg[k] for k in ("host", "port", "transport", "register", "username", "password", "realm",
                                     "expires_s", "codecs", "from_domain") if k in cfg}
        return cls(gate_id=row["gate_id"], name=row["name"], enabled=row["enabled"], **known)

    def describe(self) -> dict[str, Any]:
        return {"gate_id": self.gate_id, "name": self.name, "host": self.host, "port": self.port,
                "transport": self.transport, "register": self.register, "username": self.username,
                "realm": self.realm, "expires_s": self.expires_s, "enabled": self.enabled,
                "status": 1 if self.enabled else 0, "codecs": self.codecs, "from_domain": self.from_domain,
                "registration": self.registration, "reachable": self.reachable, "last_status": self.last_status,
                "refreshes": self.refreshes}


class GateManager:
    def __init__(self, service: SipService) -> None:
        self.service = service
        self.gates: dict[str, Gate] = {}
        self._addresses: dict[str, str] = {}

    async def start(self) -> None:
        await self.reload()

    async def stop(self) -> None:
        for gate in self.gates.values():
            await self._stop_gate(gate, unregister=True)

    async def reload(self) -> None:
        rows = {r["gate_id"]: r for r in await self.service.store.gates.list()}
        for gate_id in list(self.gates):
            if gate_id not in rows:
                await self._stop_gate(self.gates.pop(gate_id), unregister=True)
        for gate_id, row in rows.items():
            new = Gate.from_row(row)
            old = self.gates.get(gate_id)
            if old is not None:
                same = old.describe() | {"registration": 0, "reachable": 0, "last_status": 0, "refreshes": 0} == \
                    new.describe() | {"registration": 0, "reachable": 0, "last_status": 0, "refreshes": 0}
                if same and old.password == new.password:
                    continue
                await self._stop_gate(old, unregister=old.registration == "registered")
            new.address = await _resolve(new.host)
            self.gates[gate_id] = new
            if new.enabled:
                new.task = asyncio.get_running_loop().create_task(self._run(new), name=f"sip-gate-{gate_id}")
        self._addresses = {g.address: g.gate_id for g in self.gates.values() if g.enabled and g.address}

    def get(self, gate_id: str) -> Gate | None:
        return self.gates.get(gate_id)

    def by_address(self, host: str) -> Gate | None:
        gate_id = self._addresses.get(host)
        return self.gates.get(gate_id) if gate_id else None

    async def _stop_gate(self, gate: Gate, unregister: bool) -> None:
        if gate.task is not None:
            gate.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await gate.task
            gate.task = None
        if unregister and gate.register and gate.registration == "registered":
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._register(gate, expires=0), 3)

    # ---------------------------------------------------------------- the gate's loop
    async def _run(self, gate: Gate) -> None:
        interval = self.service.config.options_interval_s
        while True:
            if gate.register:
                status, expires = await self._register(gate, gate.expires_s)
                if 200 <= status < 300:
                    gate.refreshes += 1
                    # refresh well before expiry (RFC 3261 §10.2.4), at least every few seconds
                    await asyncio.sleep(max(1.0, min(expires * 0.5, expires - 5)))
                    continue
                await asyncio.sleep(RETRY_S)
            else:
                await asyncio.sleep(interval)  # first ping one interval after start: a new gate is not yet up
                status = await self._options(gate)
                reachable = status > 0
                if reachable != gate.reachable:
                    gate.reachable = reachable
                    self._event(gate, "reachable" if reachable else "unreachable")

    def _base_request(self, gate: Gate, method: str, uri: str, to_user: str, call_id: str, cseq: int) -> SipRequest:
        domain = gate.from_domain or gate.host
        user = gate.username or "mediagate"
        req = SipRequest(method=method, uri=uri)
        req.headers.append("Via", "placeholder")
        req.headers.set_single("From", f"<sip:{user}@{domain}>;tag={sipmsg.new_tag()}")
        req.headers.set_single("To", f"<sip:{to_user}@{domain}>")
        req.headers.set_single("Call-ID", call_id)
        req.headers.set_single("CSeq", f"{cseq} {method}")
        return req

    async def _transact(self, req: SipRequest, peer: Peer) -> Parsed | None:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Parsed | None] = loop.create_future()

        def on_response(parsed: Parsed) -> None:
            if parsed.message.status_code >= 200 and not done.done():  # type: ignore[union-attr]
                done.set_result(parsed)

        def on_timeout() -> None:
            if not done.done():
                done.set_result(None)
        self.service.endpoint.send_request(req, peer, on_response, on_timeout)
        return await done

    async def _options(self, gate: Gate) -> int:
        req = self._base_request(gate, "OPTIONS", f"sip:{gate.host}:{gate.port}", gate.username or "ping",
                                 secrets.token_hex(8), 1)
        parsed = await self._transact(req, Peer(gate.transport, gate.address or gate.host, gate.port))
        return 0 if parsed is None else parsed.message.status_code  # type: ignore[union-attr]

    async def _register(self, gate: Gate, expires: int) -> tuple[int, int]:
        """One REGISTER (answering a 401/407 once); (status, granted expiry)."""
        peer = Peer(gate.transport, gate.address or gate.host, gate.port)
        uri = f"sip:{gate.from_domain or gate.host}"
        call_id = getattr(gate, "_call_id", None) or secrets.token_hex(10)
        gate._call_id = call_id  # type: ignore[attr-defined]  # one Call-ID per registration (§10.2)
        cseq = getattr(gate, "_cseq", 0) + 1
        authorization: tuple[str, str] | None = None
        if expires:
            gate.registration = "registering" if gate.registration != "registered" else gate.registration
        for _ in range(2):
            gate._cseq = cseq  # type: ignore[attr-defined]
            req = self._base_request(gate, "REGISTER", uri, gate.username or "mediagate", call_id, cseq)
            req.headers.set_single("Contact", f"<sip:{gate.username or 'mediagate'}@{self.service.advertised}:"
                                               f"{self.service.endpoint.port}>")
            req.headers.set_single("Expires", str(expires))
            if authorization:
                req.headers.set_single(*authorization)
            parsed = await self._transact(req, peer)
            if parsed is None:
                return self._registered(gate, 408, 0, expires)
            status = parsed.message.status_code  # type: ignore[union-attr]
            if status in (401, 407) and authorization is None and gate.username and gate.password:
                authorization = answer_challenge(SipDigestAuth(gate.username, gate.password),
                                                 parsed.message, status, "REGISTER", uri)  # type: ignore[arg-type]
                cseq += 1
                if authorization is None:
                    return self._registered(gate, status, 0, expires)
                continue
            granted = expires
            header = parsed.message.headers.get_first("expires")
            if header and header.strip().isdigit():
                granted = int(header.strip())
            for contact in parsed.message.headers.get("contact"):
                for part in contact.split(";")[1:]:
                    name, _, value = part.partition("=")
                    if name.strip().lower() == "expires" and value.strip().isdigit():
                        granted = int(value.strip())
            return self._registered(gate, status, granted, expires)
        return self._registered(gate, 401, 0, expires)

    def _registered(self, gate: Gate, status: int, granted: int, asked: int) -> tuple[int, int]:
        gate.last_status = status
        if 200 <= status < 300:
            state = "registered" if asked else "unregistered"
            gate.registered_expires = granted
        else:
            state = "failed"
        if state != gate.registration or state == "registered":
            changed = state != gate.registration
            gate.registration = state
            if changed or gate.refreshes == 0:
                self._event(gate, state, status=status, expires=granted)
            else:
                self._event(gate, "refreshed", status=status, expires=granted)
        return status, granted

    def _event(self, gate: Gate, state: str, **extra: Any) -> None:
        self.service.node.events.emit(SIP_REGISTRATION_STATE, None, kind="gate", gate_id=gate.gate_id,
                                      name=gate.name, state=state, **extra)


async def _resolve(host: str) -> str:
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError:
        return ""
    return str(infos[0][4][0])
