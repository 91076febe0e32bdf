"""The SIP edge's core: inbound calls (UAS), dial-out (UAC), in-dialog requests, DTMF.

It sits on the endpoint (transport + transactions) and drives calls: routing, SDP
offer/answer, the media leg on the engine thread, the participant in the room.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ssl
import sys
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import structlog

from gateway.errors import Conflict, NoCapacity, NotFound, ValidationFailed
from gateway.events import SIP_CALL_STATE
from gateway.media.track import Track, TrackKind, TrackSource
from gateway.rooms.participant import ParticipantKind
from plugins.sip import message as sipmsg
from plugins.sip import sdp
from plugins.sip.calls import Call, CallState
from plugins.sip.config import SipConfig
from plugins.sip.dialog import Dialog, strip_tag
from plugins.sip.dtmf import info_digit
from plugins.sip.endpoint import ALLOW, Endpoint
from plugins.sip.legs import LegEngine, MediaLeg
from plugins.sip.message import Parsed, SipMessage, SipRequest
from plugins.sip.portpool import PortPool
from plugins.sip.prompts import PromptPlayer, load_blocks, make_prompts
from plugins.sip.routing import Decision, RouteRule, from_hook, pick
from plugins.sip.rtp import PortAllocator
from plugins.sip.session_timer import SessionTimers
from plugins.sip.store import SipStore
from plugins.sip.transaction import ServerTransaction
from plugins.sip.transport import Peer

if TYPE_CHECKING:
    from gateway.node import Node
    from plugins.sip.gates import GateManager
    from plugins.sip.registrar import Registrar

log = structlog.get_logger(__name__)

DTMF_EVENT = "sip.dtmf"
KEEP_ENDED = 1000
TELEPHONE_EVENT_PT = 101


def user_of(uri: str) -> str:
    try:
        return sipmsg.parse_uri(uri).user or ""
    except Exception:
        return ""


def gain_factor(db: float) -> float:
    return float(10 ** (db / 20))


class SipService:
    def __init__(self, node: Node, config: SipConfig) -> None:
        self.node = node
        self.config = config
        self.advertised = config.advertised_address or config.host
        tls = None
        if config.tls_port is not None and config.tls_cert and config.tls_key:  # RFC 3261 §26.2.1: SIP over TLS
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(config.tls_cert, config.tls_key)
        self.endpoint = Endpoint(config.host, config.port, self.advertised, tcp=config.tcp,
                                 rcvbuf=config.rcvbuf_bytes, tls_port=config.tls_port, tls_context=tls)
        self.endpoint.core = self
        self.ports = PortAllocator(config.rtp_port_min, config.rtp_port_max, config.host, config.rcvbuf_bytes)
        self.port_pool = PortPool(self.ports, config.rtp_pool_size)
        self.store = SipStore(node.store.engine)
        self.engine: LegEngine | None = None
        self.calls: dict[str, Call] = {}
        self.by_sip: dict[str, Call] = {}
        self.ended: OrderedDict[str, Call] = OrderedDict()
        self.routes: list[RouteRule] = []
        self.accounts: dict[str, dict[str, Any]] = {}  # username -> row (config flattened)
        self.prompts: dict[str, Any] = {}
        self.registrar: Registrar | None = None
        self.gates: GateManager | None = None
        self.timers = SessionTimers(self)  # RFC 4028
        self._tasks: set[asyncio.Task[Any]] = set()
        self.rejected_busy = 0
        self.pending_setups = 0  # inbound INVITEs between receipt and their final response
        self.disabled = False

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> None:
        from plugins.sip.gates import GateManager
        from plugins.sip.registrar import Registrar

        self.engine = LegEngine(asyncio.get_running_loop())
        interval = self.config.gil_switch_interval_ms / 1000
        if interval and interval < sys.getswitchinterval():
            sys.setswitchinterval(interval)
        self.registrar = Registrar(self)
        self.gates = GateManager(self)
        try:
            await self.endpoint.start()
        except OSError as exc:
            # a taken port must not take the whole node (and every other edge) down with it
            log.error("SIP edge not started: cannot bind", host=self.config.host, port=self.config.port,
                      error=str(exc))
            self.disabled = True
            await self.reload()
            return
        await self.reload()
        self.port_pool.start()
        if any(rule.pin for rule in self.routes):  # made at first start when PIN routes exist, else on first use
            self._prompts_task = self.spawn(self._load_prompts(), "sip-prompts")
        await self.gates.start()
        log.info("sip listening", host=self.config.host, port=self.endpoint.port, advertised=self.advertised)

    async def _load_prompts(self) -> dict[str, Any]:
        if not self.prompts:
            folder = self.config.prompt_dir or self.node.data_path("sip", "prompts")
            files = await asyncio.to_thread(make_prompts, folder)
            self.prompts = {name: await asyncio.to_thread(load_blocks, path) for name, path in files.items()}
        return self.prompts

    async def stop(self) -> None:
        if self.disabled:
            return
        for call in list(self.calls.values()):
            await self.hangup(call, reason="shutdown")
        if self.gates is not None:
            await self.gates.stop()
        for task in list(self._tasks):
            task.cancel()
        if self.engine is not None:
            self.engine.stop()
        self.port_pool.close()
        await self.endpoint.close()

    async def reload(self) -> None:
        """Re-read routes and accounts (after a CRUD change) into the memory the hot path reads."""
        self.routes = [RouteRule(r["route_id"], r["match"], r["config"].get("room_id"), r["config"].get("pin"),
                                 int(r["config"].get("priority") or 0)) for r in await self.store.routes.list()]
        self.accounts = {r["username"]: {"account_id": r["account_id"], "username": r["username"], **r["config"]}
                         for r in await self.store.accounts.list()}
        if self.gates is not None:
            await self.gates.reload()

    def spawn(self, coro: Any, name: str = "sip") -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sip task failed", task=task.get_name(), exc_info=task.exception())

    @property
    def contact(self) -> str:
        return f"<sip:mediagate@{self.advertised}:{self.endpoint.port}>"

    @property
    def active_calls(self) -> int:
        return len(self.calls)

    # ---------------------------------------------------------------- the endpoint's core interface
    def on_request(self, txn: ServerTransaction) -> None:
        method = txn.request.method
        if method == "INVITE":
            if txn.parsed.to_tag:
                self._reinvite(txn)
            else:
                self._inbound(txn)
        elif method == "BYE":
            self._bye(txn)
        elif method == "OPTIONS":
            self.endpoint.respond(txn, 200, headers=[("Allow", ALLOW), ("Accept", "application/sdp"),
                                                     ("Supported", ", ".join(sorted(sipmsg.SUPPORTED_OPTIONS)))])
        elif method == "INFO":
            self._info(txn)
        elif method == "UPDATE":  # RFC 3311, in a dialog: a session refresh or a new offer
            self._reinvite(txn)
        elif method == "REGISTER" and self.registrar is not None:
            self.spawn(self.registrar.handle(txn), "sip-register")
        elif method in ("PRACK", "SUBSCRIBE", "NOTIFY", "REFER", "MESSAGE", "PUBLISH"):
            self.endpoint.respond(txn, 405 if method != "NOTIFY" else 481, headers=[("Allow", ALLOW)])
        else:
            self.endpoint.respond(txn, 501, headers=[("Allow", ALLOW)])

    def on_cancel(self, invite: ServerTransaction) -> None:
        call = self.by_sip.get(invite.parsed.call_id)
        self.endpoint.respond(invite, 487, to_tag=call.dialog.local_tag if call and call.dialog else None)
        if call is not None:
            self.spawn(self.hangup(call, reason="cancelled", send=False), "sip-cancel")

    def on_dialog_ack(self, parsed: Parsed, peer: Peer) -> None:
        pass  # the 2xx retransmissions stopped in the endpoint; nothing else waits for it

    @property
    def media_saturated(self) -> bool:
        """The legs' media thread is near the end of its real time: no more calls for now."""
        # with no call up, a slow tick is the host's load, not ours: the first calls are let in
        return self.engine is not None and self.engine.saturated and self.active_calls > 0

    # ---------------------------------------------------------------- inbound INVITE
    def _inbound(self, txn: ServerTransaction) -> None:
        request: SipRequest = txn.request
        if (self.active_calls >= self.config.max_calls or self.pending_setups >= self.config.max_pending_setups
                or self.media_saturated):
            self.rejected_busy += 1
            self.endpoint.respond(txn, 503, headers=[("Retry-After", str(self.config.retry_after_s))])
            return
        if txn.parsed.call_id in self.by_sip:
            self.endpoint.respond(txn, 482)  # the same Call-ID on a new branch: a loop or a fork
            return
        if not sipmsg.is_sdp(request):
            self.endpoint.respond(txn, 488 if not request.body.strip() else 415,
                                  headers=[("Accept", "application/sdp")])
            return
        try:
            offer = sdp.parse(request.body.decode("utf-8", "replace"))
        except sdp.SdpError as exc:
            self.endpoint.respond(txn, 400, f"Bad SDP ({str(exc)[:40]})")
            return
        if self.timers.reject_too_small(txn):
            return  # 422 with our Min-SE (RFC 4028 §9)
        caller = self._caller(txn)
        if caller is None:
            return  # answered (401/403)
        allowed = list(self.config.codecs)
        account = caller.get("account")
        if account and account.get("recv_codec"):
            allowed = [account["recv_codec"]] + [c for c in allowed if c.upper() != account["recv_codec"].upper()]
        answer = sdp.negotiate(offer, allowed)
        if answer is None:
            self.endpoint.respond(txn, 488, headers=[("Warning", '304 mediagate "no common codec"')])
            return
        from_value = request.headers.get_first("from") or ""
        from_addr = sipmsg.parse_address(from_value)
        number = user_of(request.uri) or (sipmsg.parse_address(request.headers.get_first("to") or "").uri.user or "")
        call = Call(self, "inbound", None, remote=from_addr.uri and strip_tag(from_value), local=request.uri,
                    caller_name=from_addr.display_name or (from_addr.uri.user or ""))
        call.gate_id = caller.get("gate_id")
        call.account = account["username"] if account else None
        call.invite_txn = txn
        call.dialog = Dialog(txn.parsed.call_id, sipmsg.new_tag(), txn.parsed.from_tag,
                             local_uri=strip_tag(request.headers.get_first("to") or ""),
                             remote_uri=strip_tag(from_value),
                             remote_target=self._contact_uri(request) or strip_tag(from_value).strip("<>"),
                             peer=txn.peer, remote_cseq=txn.parsed.cseq.seq,
                             route_set=list(request.headers.get("record-route")))
        self.calls[call.call_id] = call
        self.by_sip[call.dialog.call_id] = call
        self.pending_setups += 1
        self.spawn(self._answer(call, txn, offer, answer, number, caller), "sip-inbound")

    def _caller(self, txn: ServerTransaction) -> dict[str, Any] | None:
        """Who calls: a gate (by address), a registered account, or anonymous if allowed."""
        gate = self.gates.by_address(txn.peer.host) if self.gates else None
        if gate is not None:
            return {"gate_id": gate.gate_id}
        from_user = (sipmsg.parse_address(txn.request.headers.get_first("from") or "").uri.user or "")
        account = self.accounts.get(from_user)
        registered = self.registrar is not None and self.registrar.is_registered_from(from_user, txn.peer)
        if account is not None and registered:
            return {"account": account}
        if self.config.allow_anonymous:
            return {"account": account if account and self.registrar and
                    self.registrar.is_registered_from(from_user, txn.peer) else None}
        if self.registrar is not None:
            verified = self.registrar.check_request_auth(txn)
            if verified is not None:
                return {"account": verified}
        return None

    @staticmethod
    def _contact_uri(request: SipRequest) -> str:
        contact = request.headers.get_first("contact") or ""
        if "<" in contact:
            return contact[contact.index("<") + 1:contact.index(">")] if ">" in contact else ""
        return contact.split(";")[0].strip()

    async def _route(self, call: Call, number: str, caller: dict[str, Any], txn: ServerTransaction) -> Decision:
        request = {"to": number, "from": call.remote, "gate": caller.get("gate_id"), "call_id": call.call_id,
                   "account": call.account, "source": f"{txn.peer.host}:{txn.peer.port}",
                   "headers": {name: values for name, values in txn.request.headers.items()}}
        answer = self.node.pm.hook.mediagate_sip_route(request=request, node=self.node)
        if inspect.isawaitable(answer):
            answer = await answer
        decided = from_hook(answer)
        if decided is not None:
            return decided
        rule = pick(self.routes, number)
        if rule is not None:
            return Decision(room_id=rule.room_id, pin=rule.pin, source=f"route:{rule.route_id}")
        account = caller.get("account")
        if account and account.get("default_room"):
            return Decision(room_id=account["default_room"], source="account")
        if self.config.route_by_room_id and number:
            return Decision(room_id=number, source="room_id")
        return Decision(reject=404, source="none")

    async def _answer(self, call: Call, txn: ServerTransaction, offer: sdp.MediaDescription, answer: sdp.Answer,
                      number: str, caller: dict[str, Any]) -> None:
        try:
            status = await self._answer_inner(call, txn, offer, answer, number, caller)
        except Exception:
            log.exception("inbound call failed", call_id=call.call_id)
            status = 500
        finally:
            self.pending_setups -= 1
        if status:
            if txn.finished_at is None:
                self.endpoint.respond(txn, status, to_tag=call.dialog.local_tag if call.dialog else None,
                                      headers=[("Retry-After", str(self.config.retry_after_s))]
                                      if status == 503 else None)
            await self._teardown(call, CallState.FAILED, reason="rejected", sip_status=status)

    async def _answer_inner(self, call: Call, txn: ServerTransaction, offer: sdp.MediaDescription,
                            answer: sdp.Answer, number: str, caller: dict[str, Any]) -> int:
        decision = await self._route(call, number, caller, txn)
        if decision.reject:
            return decision.reject
        if not decision.room_id:
            return 404
        try:
            room = await self.node.rooms.get(decision.room_id)
        except NotFound:
            return 404
        if not room.is_open:
            return 480
        call.room_id = room.room_id
        if call.finished:  # cancelled while routing
            return 0
        try:
            rtp_sock, rtcp_sock, call.media_port = self.port_pool.take()
        except OSError:
            return 503
        call.codec = answer.codec.name
        leg = MediaLeg(rtp_sock, rtcp_sock, answer.codec, answer.telephone_event, (offer.address, offer.port),
                       rtp_timeout=self.config.rtp_timeout_s)
        leg.sending = answer.direction in ("sendrecv", "sendonly")
        call.leg = leg
        self._wire_leg(call, leg)
        body = call.sdp.build(self.advertised, call.media_port, [answer.codec], answer.telephone_event,
                              answer.direction)
        assert call.dialog is not None
        txn.on_timeout = lambda: self.spawn(self.hangup(call, reason="no_ack"))
        if not decision.pin:
            # in the room before the 200: a BYE cannot overtake the join (it needs the 200's tag)
            try:
                await self._join(call, attach=False)
            except Exception as exc:
                log.info("inbound join failed", call_id=call.call_id, error=str(exc))
                return 503 if isinstance(exc, NoCapacity) else 480
            if call.finished:  # cancelled while joining: _teardown found no participant yet
                await self._leave(call, "sip_cancelled")
                return 0
        self.endpoint.respond(txn, 200, to_tag=call.dialog.local_tag, body=body.encode(),
                              headers=[("Contact", self.contact), ("Allow", ALLOW),
                                       *self.timers.answer(call, txn)])
        # the media starts with the ACK (the dialog confirmed): a caller that hangs up at once
        # never costs the media threads a tick, and one whose ACK never comes is ended by timer H
        # (after the datagrams already read: a BYE right behind the ACK ends the call first)
        txn.on_ack = lambda _parsed: asyncio.get_running_loop().call_soon(self._confirmed, call, decision.pin)
        call.set_state(CallState.CONNECTED, sip_status=200)
        return 0

    def _confirmed(self, call: Call, pin: str | None) -> None:
        if call.finished or call.leg is None or self.engine is None:
            return
        self.engine.add(call.leg)
        if pin:
            self.spawn(self._pin_then_join(call, pin), "sip-pin")
        else:
            self._attach_media(call)

    async def _leave(self, call: Call, reason: str) -> None:
        self._detach_media(call)
        if call.room_id and call.participant_id:
            await self.node.rooms.leave(call.room_id, call.participant_id, reason)

    def _wire_leg(self, call: Call, leg: MediaLeg) -> None:
        leg.on_digit = lambda digit: self.digit(call, digit)
        leg.on_timeout = lambda: self.spawn(self.hangup(call, reason="rtp_timeout"))
        leg.gain = gain_factor(call.gain_db)

    async def _join(self, call: Call, *, attach: bool = True) -> None:
        """The leg becomes a participant: its audio a track on the bus, its ears a mix-minus."""
        assert call.room_id is not None and call.leg is not None
        identity = call.identity or f"sip_{(user_of(call.remote.strip('<>')) or 'anonymous')}_{call.call_id[3:9]}"
        call.identity = identity
        participant = await self.node.rooms.join(call.room_id, identity, kind=ParticipantKind.SIP,
                                                 name=call.caller_name or identity, operator=True,
                                                 metadata={"sip_call_id": call.call_id})
        participant.edge = call
        call.participant_id = participant.participant_id
        if attach:
            self._attach_media(call)

    def _attach_media(self, call: Call) -> None:
        room = self.node.rooms.rooms.get(call.room_id or "")
        if room is None or call.leg is None or call.participant_id is None:
            return
        media = self.node.media.room_media(room)
        track = Track(TrackKind.AUDIO, TrackSource.MIC, call.participant_id, media.bus.clock, name="sip")
        media.bus.add_track(track)
        call.leg.track = track
        call.leg.mix = media.mixer.add_listener(call.participant_id)

    def _detach_media(self, call: Call) -> None:
        leg = call.leg
        if leg is None:
            return
        if self.engine is not None:
            self.engine.remove(leg)
        room = self.node.rooms.rooms.get(call.room_id or "")
        if room is not None and room.media is not None:
            if leg.mix is not None and not isinstance(leg.mix, PromptPlayer):
                room.media.mixer.remove_output(leg.mix)
            if leg.track is not None:
                room.media.bus.remove_track(leg.track.track_id)
        leg.mix = leg.track = None

    # ---------------------------------------------------------------- PIN prompt
    async def _pin_then_join(self, call: Call, pin: str) -> None:
        leg = call.leg
        assert leg is not None
        player = PromptPlayer()
        leg.mix = player
        call.pin_waiter = asyncio.Queue()
        for _attempt in range(self.config.pin_attempts):
            await self._play(call, player, "enter_pin")
            entered = await self._collect(call, len(pin))
            if call.finished:
                return
            if entered == pin:
                call.pin_waiter = None
                leg.mix = None
                try:
                    await self._join(call)
                except Exception as exc:
                    log.info("pin join failed", error=str(exc))
                    await self.hangup(call, reason="join_failed")
                return
            self.node.events.emit("sip.pin.wrong", call.room_id, call_id=call.call_id, attempt=_attempt + 1)
            await self._play(call, player, "wrong_pin")
        await self._play(call, player, "goodbye")
        await self.hangup(call, reason="wrong_pin")

    async def _play(self, call: Call, player: PromptPlayer, name: str) -> None:
        if not self.prompts:
            task = getattr(self, "_prompts_task", None)
            await (task if task is not None and not task.done() else self._load_prompts())
        blocks = self.prompts.get(name)
        if blocks is None or call.finished:
            return
        player.play(blocks)
        await asyncio.to_thread(player.done.wait, len(blocks) * 0.02 + 5)

    async def _collect(self, call: Call, length: int) -> str:
        """Digits until '#', `length` digits or the timeout (the prompt's digits count too)."""
        entered = ""
        queue: asyncio.Queue[str] = call.pin_waiter
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.pin_timeout_s
        while not call.finished:
            try:
                digit = await asyncio.wait_for(queue.get(), max(0.01, deadline - loop.time()))
            except TimeoutError:
                break
            if digit == "#":
                if not entered:
                    continue  # the '#' closing the previous full-length entry
                break
            entered += digit
            if len(entered) >= length:
                break
        return entered

    # ---------------------------------------------------------------- DTMF
    def digit(self, call: Call, digit: str) -> None:
        """A received digit (RFC 4733 or INFO): an event on the room, and the PIN collector's."""
        call.digits.append(digit)
        self.node.events.emit(DTMF_EVENT, call.room_id, call_id=call.call_id, participant_id=call.participant_id,
                              digit=digit, index=len(call.digits) - 1)
        if call.pin_waiter is not None:
            call.pin_waiter.put_nowait(digit)

    def send_dtmf(self, call: Call, digits: str, duration_ms: int = 100, gap_ms: int = 70) -> str:
        if call.state is not CallState.CONNECTED or call.leg is None:
            raise Conflict(f"call {call.call_id} is {call.state.value}", code="call_not_connected")
        if call.leg.telephone_event is not None:
            call.leg.queue_digits(digits, duration_ms, gap_ms)
            return "rfc4733"
        self.spawn(self._info_digits(call, digits, duration_ms, gap_ms), "sip-info")
        return "info"

    async def _info_digits(self, call: Call, digits: str, duration_ms: int, gap_ms: int) -> None:
        for d in digits:
            if call.dialog is None or call.finished:
                return
            req = call.dialog.request("INFO", self.contact)
            req.headers.set_single("Content-Type", "application/dtmf-relay")
            req.body = f"Signal={d}\r\nDuration={duration_ms}\r\n".encode()
            self.endpoint.send_request(req, call.dialog.peer, lambda _p: None, lambda: None)
            await asyncio.sleep((duration_ms + gap_ms) / 1000)

    def _info(self, txn: ServerTransaction) -> None:
        call = self.by_sip.get(txn.parsed.call_id)
        if call is None:
            self.endpoint.respond(txn, 481)
            return
        digit = info_digit(txn.request.headers.get_first("content-type") or "", txn.request.text)
        if digit is None and txn.request.body.strip():
            self.endpoint.respond(txn, 415, headers=[("Accept", "application/dtmf-relay, application/dtmf")])
            return
        self.endpoint.respond(txn, 200)
        if digit is not None:
            self.digit(call, digit)

    # ---------------------------------------------------------------- in-dialog
    def _bye(self, txn: ServerTransaction) -> None:
        call = self.by_sip.get(txn.parsed.call_id)
        if call is None or call.dialog is None:
            self.endpoint.respond(txn, 481)
            return
        self.endpoint.respond(txn, 200)
        if call.invite_txn is not None and call.invite_txn.finished_at is None:
            self.endpoint.respond(call.invite_txn, 487, to_tag=call.dialog.local_tag)
        if self._end(call, CallState.ENDED, reason="hangup"):
            self.spawn(self.node.rooms.leave(call.room_id, call.participant_id, "sip_hangup"),  # type: ignore[arg-type]
                       "sip-bye")

    def _reinvite(self, txn: ServerTransaction) -> None:
        """A re-INVITE or an UPDATE (RFC 3311): a new offer, or none (an UPDATE without a
        body is a session refresh only, RFC 4028 §7.4); either refreshes the session timer."""
        call = self.by_sip.get(txn.parsed.call_id)
        if call is None or call.dialog is None or call.leg is None or call.finished or \
                txn.parsed.to_tag != call.dialog.local_tag:
            self.endpoint.respond(txn, 481)
            return
        leg = call.leg
        if txn.parsed.cseq.seq <= call.dialog.remote_cseq:
            self.endpoint.respond(txn, 500, headers=[("Retry-After", "1")])
            return
        call.dialog.remote_cseq = txn.parsed.cseq.seq
        if self.timers.reject_too_small(txn):
            return
        call.dialog.remote_target = self._contact_uri(txn.request) or call.dialog.remote_target  # §12.2.2
        update = txn.request.method == "UPDATE"
        if self.timers.glare(call) and (not update or sipmsg.is_sdp(txn.request)):
            self.endpoint.respond(txn, 491)  # an offer while ours is in flight (RFC 3261 §14.2, RFC 3311 §5.2)
            return
        if update and not sipmsg.is_sdp(txn.request):
            self.endpoint.respond(txn, 200, headers=[("Contact", self.contact), *self.timers.answer(call, txn)])
            return
        direction = "sendrecv" if not call.on_hold else "sendonly"
        if sipmsg.is_sdp(txn.request):
            try:
                offer = sdp.parse(txn.request.text)
            except sdp.SdpError:
                self.endpoint.respond(txn, 400, "Bad SDP")
                return
            codecs = [c for c in offer.codecs() if c.name == leg.codec.name]
            if not codecs:
                self.endpoint.respond(txn, 488)
                return
            mirror = {"sendonly": "recvonly", "recvonly": "sendonly"}.get(offer.direction, offer.direction)
            direction = mirror
            held = offer.direction in ("sendonly", "inactive") or offer.address in ("0.0.0.0", "::")
            leg.sending = mirror in ("sendrecv", "sendonly") and not held
            leg.receiving = offer.direction in ("sendrecv", "sendonly")
            if not leg.latched and offer.port and not held:
                leg.remote = (offer.address, offer.port)
            if held != call.on_hold:
                call.on_hold = held
                self.call_changed(call)
        body = call.sdp.build(self.advertised, leg.local_port, [leg.codec], leg.telephone_event, direction)
        self.endpoint.respond(txn, 200, body=body.encode(),
                              headers=[("Contact", self.contact), *self.timers.answer(call, txn)])

    def apply_refresh_answer(self, call: Call, response: SipMessage) -> None:
        """The SDP answer to a refresh re-INVITE of ours (RFC 3264 §8): the peer may have moved
        its media or changed direction. An answer without the call's codec, or one that does not
        parse, keeps the session as it was."""
        leg = call.leg
        if leg is None or call.finished or not sipmsg.is_sdp(response):
            return
        try:
            answer = sdp.parse(response.text)
        except sdp.SdpError as exc:
            log.info("refresh answer with bad sdp: session kept", call_id=call.call_id, error=str(exc))
            return
        if not any(c.name == leg.codec.name for c in answer.codecs()):
            log.info("refresh answer without the call's codec: session kept", call_id=call.call_id)
            return
        unreachable = not answer.port or answer.address in ("0.0.0.0", "::")
        leg.sending = answer.direction in ("sendrecv", "recvonly") and not unreachable and not call.on_hold
        leg.receiving = answer.direction in ("sendrecv", "sendonly")
        if not leg.latched and not unreachable:  # once latched, the packets' source is the truth
            leg.remote = (answer.address, answer.port)

    # ---------------------------------------------------------------- dial-out
    async def dial(self, room_id: str, to: str, *, gate_id: str | None = None, from_user: str | None = None,
                   caller_name: str | None = None, gain_db: float = 0.0, identity: str | None = None,
                   callback_url: str | None = None) -> Call:
        room = await self.node.rooms.get(room_id)
        if self.disabled:
            raise NoCapacity("the SIP edge is not running (its port could not be bound)", code="sip_disabled")
        if self.active_calls >= self.config.max_calls or self.media_saturated:
            raise NoCapacity("the SIP edge is at capacity", code="sip_busy")
        uri, peer, codecs, auth = await self._target(to, gate_id)
        from_user = from_user or "mediagate"
        local_uri = f"<sip:{from_user}@{self.advertised}:{self.endpoint.port}>"
        if caller_name:
            local_uri = f'"{caller_name}" {local_uri}'
        call = Call(self, "outbound", room.room_id, remote=uri, local=local_uri, caller_name=caller_name or to,
                    gain_db=gain_db, gate_id=gate_id, callback_url=callback_url)
        call.identity = identity or f"sip_{user_of(uri) or 'callee'}_{call.call_id[3:9]}"
        try:
            rtp_sock, rtcp_sock, call.media_port = self.port_pool.take()
        except OSError as exc:
            raise NoCapacity("no RTP port free", code="sip_no_ports") from exc
        offer_codecs = [sdp.codec(name) for name in codecs]
        leg = MediaLeg(rtp_sock, rtcp_sock, offer_codecs[0], TELEPHONE_EVENT_PT, None,
                       rtp_timeout=self.config.rtp_timeout_s)
        call.leg = leg
        self._wire_leg(call, leg)
        call.dialog = Dialog(sipmsg.new_id(96) + "@mediagate", sipmsg.new_tag(), None, local_uri=local_uri,
                             remote_uri=f"<{uri}>", remote_target=uri, peer=peer)
        self.calls[call.call_id] = call
        self.by_sip[call.dialog.call_id] = call
        participant = await self.node.rooms.join(room.room_id, call.identity, kind=ParticipantKind.SIP,
                                                 name=call.caller_name, operator=True,
                                                 metadata={"sip_call_id": call.call_id})
        participant.edge = call
        call.participant_id = participant.participant_id
        body = call.sdp.build(self.advertised, leg.local_port, offer_codecs, TELEPHONE_EVENT_PT)
        self._send_invite(call, body, offer_codecs, auth)
        self.call_changed(call)
        loop = asyncio.get_running_loop()
        loop.call_later(self.config.ring_timeout_s, self._ring_timeout, call)
        return call

    def _ring_timeout(self, call: Call) -> None:
        if call.state in (CallState.CALLING, CallState.RINGING):
            self.spawn(self.hangup(call, reason="no_answer", status=408))

    async def _target(self, to: str, gate_id: str | None) -> tuple[str, Peer, list[str], tuple[str, str] | None]:
        """(request URI, next hop, codecs to offer, credentials) of a dial-out."""
        codecs = list(self.config.codecs)
        if gate_id:
            gate = self.gates.get(gate_id) if self.gates else None
            if gate is None:
                raise NotFound(f"no such gate {gate_id!r}", code="gate_not_found", field="gate_id")
            if not gate.enabled:
                raise Conflict(f"gate {gate_id!r} is disabled", code="gate_disabled", field="gate_id")
            user = user_of(to) if to.startswith(("sip:", "sips:")) else to
            uri = f"sip:{user}@{gate.host}:{gate.port}"
            auth = (gate.username, gate.password) if gate.username and gate.password else None
            return uri, Peer(gate.transport, gate.address or gate.host, gate.port), gate.codecs or codecs, auth
        if to.startswith(("sip:", "sips:")):
            try:
                parsed = sipmsg.parse_uri(to)
            except Exception as exc:
                raise ValidationFailed(f"bad SIP URI {to!r}", code="invalid_address", field="to") from exc
            if not parsed.host:
                raise ValidationFailed(f"bad SIP URI {to!r}", code="invalid_address", field="to")
            transport = (parsed.params.get("transport") or "udp").lower()
            host = await _resolve(parsed.host)
            peer = Peer(transport if transport in ("udp", "tcp") else "udp", host, parsed.port or 5060)
            return to, peer, codecs, None
        account = self.accounts.get(to)
        if account is not None:
            binding = self.registrar.binding(to) if self.registrar else None
            if binding is None:
                raise Conflict(f"account {to!r} is not registered", code="account_not_registered", field="to")
            preferred = account.get("send_codec")
            if preferred:
                codecs = [preferred] + [c for c in codecs if c.upper() != preferred.upper()]
            return binding.contact, binding.peer, codecs, None
        raise ValidationFailed(f"{to!r} is neither a SIP URI nor an account; give a gate_id for a number",
                               code="invalid_address", field="to")

    def _send_invite(self, call: Call, body: str, offer_codecs: list[sdp.Codec], auth: tuple[str, str] | None,
                     authorization: tuple[str, str] | None = None, min_se: int | None = None) -> None:
        dialog = call.dialog
        assert dialog is not None
        req = dialog.request("INVITE", self.contact, cseq=dialog.local_cseq)
        req.headers.set_single("Content-Type", "application/sdp")
        req.headers.set_single("Allow", ALLOW)
        self.timers.offer(req, min_se)
        if authorization:
            req.headers.set_single(*authorization)
        req.body = body.encode()
        call.outbound_request = req  # type: ignore[attr-defined]

        def on_response(parsed: Parsed) -> None:
            self._invite_response(call, parsed, body, offer_codecs, auth, req, authorization)

        def on_timeout() -> None:
            self.spawn(self._teardown(call, CallState.FAILED, reason="timeout", sip_status=408))

        call.client_txn = self.endpoint.send_request(req, dialog.peer, on_response, on_timeout)

    def _invite_response(self, call: Call, parsed: Parsed, body: str, offer_codecs: list[sdp.Codec],
                         auth: tuple[str, str] | None, req: SipRequest,
                         authorization: tuple[str, str] | None) -> None:
        retried = authorization is not None
        response = parsed.message
        status = response.status_code  # type: ignore[union-attr]
        dialog = call.dialog
        assert dialog is not None
        if status < 200:
            if status in (180, 183) and call.state is CallState.CALLING:
                call.set_state(CallState.RINGING, sip_status=status)
            return
        if status >= 300:
            self._ack_failure(call, parsed, req)
            if status in (401, 407) and auth and not retried and not call.finished:
                from aiosipua.auth import SipDigestAuth, answer_challenge

                header = answer_challenge(SipDigestAuth(*auth), response, status, "INVITE", req.uri)  # type: ignore[arg-type]
                if header is not None:
                    dialog.local_cseq += 1
                    self._send_invite(call, body, offer_codecs, auth, header)
                    return
            if status == 422 and not call.finished and not call.cancel_requested:
                min_se = self.timers.retry_min_se(response, req)  # type: ignore[arg-type]
                if min_se is not None:  # RFC 4028 §7.3: again, with at least its Min-SE
                    dialog.local_cseq += 1
                    self._send_invite(call, body, offer_codecs, auth, authorization, min_se)
                    return
            if status == 487 or call.cancel_requested:
                self.spawn(self._teardown(call, CallState.ENDED, reason="cancelled", sip_status=status))
            else:
                self.spawn(self._teardown(call, CallState.FAILED, reason="rejected", sip_status=status))
            return
        # 2xx: ACK (every retransmission too), then the media
        first = dialog.remote_tag is None
        if first:
            dialog.remote_tag = parsed.to_tag
            contact = self._contact_uri(response)  # type: ignore[arg-type]
            if contact:
                dialog.remote_target = contact
            dialog.route_set = list(reversed(response.headers.get("record-route")))
        ack = dialog.request("ACK", self.contact, cseq=parsed.cseq.seq)
        self.endpoint.send_ack(ack, dialog.peer)
        if not first:
            return
        if call.finished or call.cancel_requested:
            self.spawn(self._send_bye(call))
            return
        try:
            answer = sdp.parse(response.text) if sipmsg.is_sdp(response) else None
        except sdp.SdpError:
            answer = None
        chosen = None
        if answer is not None:
            offered = {c.name for c in offer_codecs}
            chosen = next((c for c in answer.codecs() if c.name in offered), None)
        if answer is None or chosen is None or call.leg is None:
            self.spawn(self.hangup(call, reason="bad_answer", status=488))
            return
        leg = call.leg
        leg.codec = chosen
        if chosen.name not in ("PCMU", "PCMA"):
            from plugins.sip.codecs import PyAvCodec

            leg.pyav = PyAvCodec(chosen)
        leg.telephone_event = answer.telephone_event()
        leg.remote = (answer.address, answer.port)
        leg.sending = answer.direction in ("sendrecv", "recvonly")
        call.codec = chosen.name
        # the session is now the answered codec: what a refresh re-INVITE offers again
        call.sdp.build(self.advertised, leg.local_port, [chosen], leg.telephone_event)
        self._attach_media(call)
        if self.engine is not None:
            self.engine.add(leg)
        self.timers.connected(call, response)  # type: ignore[arg-type]
        call.set_state(CallState.CONNECTED, sip_status=status)

    def _ack_failure(self, call: Call, parsed: Parsed, req: SipRequest) -> None:
        """§17.1.1.3: the ACK of a non-2xx final response, same branch, To with the response's tag."""
        ack = SipRequest(method="ACK", uri=req.uri)
        ack.headers.set_single("From", req.headers.get_first("from") or "")
        ack.headers.set_single("To", parsed.message.headers.get_first("to") or "")
        ack.headers.set_single("Call-ID", req.headers.get_first("call-id") or "")
        ack.headers.set_single("CSeq", f"{parsed.cseq.seq} ACK")
        assert call.dialog is not None
        self.endpoint.send_ack(ack, call.dialog.peer, branch=parsed.branch)

    def _send_cancel(self, call: Call) -> None:
        ctx = call.client_txn
        req = getattr(call, "outbound_request", None)
        if ctx is None or req is None or call.dialog is None:
            return
        cancel = SipRequest(method="CANCEL", uri=req.uri)
        cancel.headers.set_single("From", req.headers.get_first("from") or "")
        cancel.headers.set_single("To", req.headers.get_first("to") or "")
        cancel.headers.set_single("Call-ID", req.headers.get_first("call-id") or "")
        cancel.headers.set_single("CSeq", f"{call.dialog.local_cseq} CANCEL")
        self.endpoint.send_request(cancel, call.dialog.peer, lambda _p: None, lambda: None, branch=ctx.branch)

    async def _send_bye(self, call: Call) -> None:
        if call.dialog is None or not call.dialog.confirmed:
            return
        done = asyncio.get_running_loop().create_future()
        req = call.dialog.request("BYE", self.contact)

        def finish(*_: Any) -> None:
            if not done.done():
                done.set_result(None)
        self.endpoint.send_request(req, call.dialog.peer, finish, finish)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done, 5)

    # ---------------------------------------------------------------- ending
    async def hangup(self, call: Call, *, reason: str = "hangup", send: bool = True, leave: bool = True,
                     status: int | None = None) -> None:
        """End a call from our side (API, kick, timeout) or after the peer's BYE/CANCEL (send=False)."""
        if call.finished:
            return
        if send:
            if call.direction == "outbound" and call.state in (CallState.CALLING, CallState.RINGING):
                call.cancel_requested = True
                self._send_cancel(call)
            elif call.direction == "inbound" and call.invite_txn is not None and call.invite_txn.finished_at is None:
                self.endpoint.respond(call.invite_txn, 480, to_tag=call.dialog.local_tag if call.dialog else None)
            elif call.dialog is not None and call.dialog.confirmed:
                self.spawn(self._send_bye(call), "sip-bye-out")
        await self._teardown(call, CallState.ENDED, reason=reason, sip_status=status, leave=leave)

    async def _teardown(self, call: Call, state: CallState, *, reason: str, sip_status: int | None = None,
                        leave: bool = True) -> None:
        if self._end(call, state, reason=reason, sip_status=sip_status) and leave:
            await self.node.rooms.leave(call.room_id, call.participant_id, f"sip_{reason}")  # type: ignore[arg-type]

    def _end(self, call: Call, state: CallState, *, reason: str, sip_status: int | None = None) -> bool:
        """The synchronous part of ending a call (media off, state, tables); True when a
        participant is left to remove. Run at once on a BYE, not as a task queued behind others."""
        if call.finished:
            return False
        self._detach_media(call)
        self.timers.stop(call)
        call.set_state(state, sip_status=sip_status, reason=reason)
        self.calls.pop(call.call_id, None)
        if call.dialog is not None:
            self.by_sip.pop(call.dialog.call_id, None)
        self.ended[call.call_id] = call
        while len(self.ended) > KEEP_ENDED:
            self.ended.popitem(last=False)
        return bool(call.room_id and call.participant_id)

    # ---------------------------------------------------------------- API helpers
    def get(self, call_id: str) -> Call:
        call = self.calls.get(call_id) or self.ended.get(call_id)
        if call is None:
            raise NotFound(f"no such call {call_id!r}", code="call_not_found", field="call_id")
        return call

    def set_gain(self, call: Call, gain_db: float) -> None:
        call.gain_db = gain_db
        if call.leg is not None:
            call.leg.gain = gain_factor(gain_db)

    def call_changed(self, call: Call) -> None:
        data = {k: v for k, v in call.describe().items() if k not in ("history",)}
        event = self.node.events.emit(SIP_CALL_STATE, call.room_id, **data)
        if call.callback_url:
            try:
                self.node.pm.hook.mediagate_task_callback(url=call.callback_url, event=event, node=self.node)
            except Exception:
                log.exception("sip call callback failed", call_id=call.call_id)


async def _resolve(host: str) -> str:
    if host.replace(".", "").isdigit() or ":" in host:
        return host
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, None, type=2)
    except OSError as exc:
        raise ValidationFailed(f"cannot resolve {host!r}", code="invalid_address", field="to") from exc
    return infos[0][4][0]

