"""Session timers (RFC 4028): a dialog nobody refreshes is ended, not kept for ever.

Negotiation, per transaction (an INVITE, a re-INVITE or an UPDATE):

- as UAS (§9): the caller's ``Session-Expires`` below our floor (``session_min_se_s``) is
  answered 422 with our ``Min-SE`` when the caller said ``Supported: timer`` (one that did
  not cannot act on a 422: a proxy put the header in, and the interval is raised instead).
  We never raise an asked interval, only lower it to ``session_expires_s`` (and never below
  the request's ``Min-SE``). The refresher follows §9's table: a caller without timer
  support leaves it to us (``refresher=uas``); one with it keeps what it asked for, and is
  the refresher when it did not say. ``Require: timer`` goes in the 2xx only when the caller
  supports timers (§9: MUST for refresher=uac, SHOULD for uas).
- as UAC (§7): the INVITE offers ``Session-Expires``, ``Min-SE`` and ``Supported: timer``;
  a 422 is retried with its larger ``Min-SE``; the 2xx's ``Session-Expires`` sets the
  interval and who refreshes (none in the 2xx: no session timer, §7.2).

Running (§10): the refresher sends a refresh at half the interval, an UPDATE without a body
(RFC 3311) when the peer's ``Allow`` has UPDATE, else a re-INVITE that re-offers the current
session description (same ``o=`` version: nothing changed, RFC 3264 §8); a 408, a 481 or no
answer ends the call with a BYE. The other side ends it with a BYE when no refresh came by
``interval - min(32, interval / 3)``. A peer that never supports timers answers our refreshes
without ``Session-Expires``: the interval we set stays, the answer itself is the proof of life.

``refresher`` values are in the roles of the transaction that carries them, not of the
dialog: in a refresh we send, ``refresher=uac`` means us.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from plugins.sip.endpoint import ALLOW
from plugins.sip.message import SipRequest, new_tag

if TYPE_CHECKING:
    from aiosipua.message import SipMessage

    from plugins.sip.calls import Call
    from plugins.sip.message import Parsed
    from plugins.sip.service import SipService
    from plugins.sip.transaction import ServerTransaction

log = structlog.get_logger(__name__)

REASON = "session_timer"  # the call's end reason (participant left with "sip_session_timer")
OPTION = "timer"
REFRESH_METHODS = ("INVITE", "UPDATE")


# ---------------------------------------------------------------- headers (§4, §5)
def _values(message: SipMessage, name: str, compact: str | None = None) -> list[str]:
    values = list(message.headers.get(name))
    if compact:  # aiosipua expands RFC 3261's compact names, not RFC 4028's "x"
        values += message.headers.get(compact)
    return values


def session_expires(message: SipMessage) -> tuple[int, str | None] | None:
    """(interval, refresher) of a ``Session-Expires`` header; None when absent or unparsable."""
    values = _values(message, "session-expires", "x")
    if not values:
        return None
    delta, *params = (part.strip() for part in values[0].split(";"))
    if not delta.isdigit():
        return None
    refresher = None
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "refresher" and value.strip().lower() in ("uac", "uas"):
            refresher = value.strip().lower()
    return int(delta), refresher


def min_se(message: SipMessage) -> int | None:
    values = _values(message, "min-se")
    delta = values[0].split(";")[0].strip() if values else ""
    return int(delta) if delta.isdigit() else None


def option_tags(message: SipMessage, name: str) -> set[str]:
    return {tag.strip().lower() for value in _values(message, name) for tag in value.split(",") if tag.strip()}


def supports_timer(message: SipMessage) -> bool:
    return OPTION in option_tags(message, "supported") or OPTION in option_tags(message, "require")


def allows_update(message: SipMessage) -> bool:
    """The peer's ``Allow`` lists UPDATE. Without an Allow nothing is known: a re-INVITE,
    which every UA handles, is the safe refresh then."""
    return "update" in option_tags(message, "allow")


# ---------------------------------------------------------------- negotiation
@dataclass(frozen=True)
class Terms:
    """A negotiated session timer: the interval, whether we refresh, whether the peer
    understands timers (then the 2xx carries ``Require: timer``)."""

    interval: int
    we_refresh: bool
    peer_supports: bool

    def answer_headers(self) -> list[tuple[str, str]]:
        """For the 2xx we send to a request the peer sent (we are its UAS)."""
        headers = [("Supported", OPTION),
                   ("Session-Expires", f"{self.interval};refresher={'uas' if self.we_refresh else 'uac'}")]
        if self.peer_supports:
            headers.append(("Require", OPTION))
        return headers

    def describe(self) -> dict[str, Any]:
        return {"interval_s": self.interval, "refresher": "us" if self.we_refresh else "peer"}


def negotiate(request: SipMessage, *, wanted: int, floor: int) -> Terms | int:
    """§9, for a request we answer: the terms, or the Min-SE of a 422 (an int)."""
    supported = supports_timer(request)
    asked = session_expires(request)
    lowest = max(floor, min_se(request) or 0)
    refresher = None
    if asked is not None:
        interval, refresher = asked
        if interval < floor:
            if supported:
                return floor
            interval = lowest  # a proxy asked for it; the caller could not act on a 422
        interval = max(min(interval, wanted), lowest)
    else:
        interval = max(wanted, lowest)  # §9: the UAS may ask for a timer the request did not
    # §9's table: without support the refresher is the UAS (us); with it, the caller's choice,
    # and a caller that did not choose keeps the refreshes (it offered to do them)
    we_refresh = not supported or refresher == "uas"
    return Terms(interval, we_refresh, supported)


def from_response(response: SipMessage, *, peer_supports: bool = False) -> Terms | None:
    """§7.2, the 2xx to a request we sent: the terms, None when it set no timer."""
    answered = session_expires(response)
    if answered is None:
        return None
    interval, refresher = answered
    # §7.2: the UAS must name the refresher; one that forgot leaves it to us, the UAC
    return Terms(interval, refresher != "uas", peer_supports or supports_timer(response))


def margin(interval: float) -> float:
    """§10: the non-refresher's BYE goes this long before the session would expire."""
    return min(32.0, interval / 3)


def failure_ack(invite: SipRequest, parsed: Parsed) -> SipRequest:
    """RFC 3261 §17.1.1.3: the ACK of a non-2xx final answer to `invite`: its Request-URI,
    From, Call-ID and Route, the answer's To, CSeq number with method ACK."""
    ack = SipRequest(method="ACK", uri=invite.uri)
    ack.headers.set_single("From", invite.headers.get_first("from") or "")
    ack.headers.set_single("To", parsed.message.headers.get_first("to") or "")
    ack.headers.set_single("Call-ID", invite.headers.get_first("call-id") or "")
    ack.headers.set_single("CSeq", f"{parsed.cseq.seq} ACK")
    for route in invite.headers.get("route"):
        ack.headers.append("Route", route)
    return ack


# ---------------------------------------------------------------- one dialog's timer
@dataclass(eq=False)
class SessionTimer:
    terms: Terms
    peer_update: bool  # refresh by UPDATE (the peer allows it), else by re-INVITE
    refreshing: str | None = None  # the method of our refresh in flight
    refreshes: int = 0  # refreshes done (sent and answered, or received)
    _refresh_at: asyncio.TimerHandle | None = None
    _expire_at: asyncio.TimerHandle | None = None

    def describe(self) -> dict[str, Any]:
        return {**self.terms.describe(), "refreshes": self.refreshes}

    def cancel(self) -> None:
        for handle in (self._refresh_at, self._expire_at):
            if handle is not None:
                handle.cancel()
        self._refresh_at = self._expire_at = None


class SessionTimers:
    """The SIP service's session timers: negotiation at each hook, then the timer per call."""

    def __init__(self, service: SipService) -> None:
        self.service = service
        self.wanted = service.config.session_expires_s
        self.floor = service.config.session_min_se_s

    # ---- as UAS: an INVITE, re-INVITE or UPDATE we answer
    def reject_too_small(self, txn: ServerTransaction) -> bool:
        """§9: answer 422 with our Min-SE when the request's interval is below it."""
        terms = negotiate(txn.request, wanted=self.wanted, floor=self.floor)
        if isinstance(terms, int):
            self.service.endpoint.respond(txn, 422, to_tag=new_tag(),
                                          headers=[("Min-SE", str(terms))])
            return True
        return False

    def answer(self, call: Call, txn: ServerTransaction) -> list[tuple[str, str]]:
        """The timer headers of our 2xx to `txn` (checked by reject_too_small first); the
        timer of the call runs from now on those terms."""
        terms = negotiate(txn.request, wanted=self.wanted, floor=self.floor)
        assert isinstance(terms, Terms)
        timer: SessionTimer | None = call.session_timer
        if timer is None:
            timer = call.session_timer = SessionTimer(terms, allows_update(txn.request))
        else:
            timer.terms = terms
            timer.refreshes += 1
            timer.peer_update = timer.peer_update or allows_update(txn.request)
        self._arm(call, timer)
        return terms.answer_headers()

    def glare(self, call: Call) -> bool:
        """A re-INVITE of ours is in flight: the peer's gets 491 (RFC 3261 §14.2)."""
        timer: SessionTimer | None = call.session_timer
        return bool(timer and timer.refreshing == "INVITE")

    # ---- as UAC: the dial-out INVITE
    def offer(self, req: SipRequest, min_se_s: int | None = None) -> None:
        """§7.1: ask for our interval; after a 422, at least the Min-SE it named."""
        floor = max(self.floor, min_se_s or 0)
        req.headers.set_single("Supported", OPTION)
        req.headers.set_single("Session-Expires", str(max(self.wanted, floor)))
        req.headers.set_single("Min-SE", str(floor))

    def retry_min_se(self, response: SipMessage, sent: SipRequest) -> int | None:
        """§7.3: the Min-SE to retry a 422 with; None when it does not raise what we sent
        (a second 422 for the same interval would loop)."""
        asked = min_se(response)
        current = session_expires(sent)
        if asked is None or (current is not None and asked <= current[0]):
            return None
        return asked

    def connected(self, call: Call, response: SipMessage) -> None:
        """The first 2xx of our INVITE: a timer when it set one (§7.2)."""
        self.stop(call)  # one an early-dialog UPDATE may have started
        call.session_timer = None
        terms = from_response(response)
        if terms is not None:
            call.session_timer = SessionTimer(terms, allows_update(response))
            self._arm(call, call.session_timer)

    # ---- both
    def stop(self, call: Call) -> None:
        timer: SessionTimer | None = call.session_timer
        if timer is not None:
            timer.cancel()

    def _arm(self, call: Call, timer: SessionTimer) -> None:
        """Timers from now: the refresh at half the interval if ours, the end at expiry
        (ours) or `margin` before it (the peer's refresh is late)."""
        timer.cancel()
        if call.finished:
            return
        loop = asyncio.get_running_loop()
        interval = timer.terms.interval
        if timer.terms.we_refresh:
            timer._refresh_at = loop.call_later(interval / 2, self._refresh, call, timer)
            timer._expire_at = loop.call_later(interval, self._expired, call, None)
        else:
            timer._expire_at = loop.call_later(interval - margin(interval), self._expired, call, None)

    def _expired(self, call: Call, status: int | None) -> None:
        if call.finished:
            return
        timer: SessionTimer | None = call.session_timer
        if status is None and timer is not None and timer.refreshing:
            status = 408  # our refresh is still unanswered at expiry
        log.info("session timer ended the call", call_id=call.call_id, status=status,
                 interval_s=timer.terms.interval if timer else None,
                 refresher="us" if timer and timer.terms.we_refresh else "peer")
        self.service.spawn(self.service.hangup(call, reason=REASON, status=status), "sip-session-timer")

    # ---- our refresh (§7.4)
    def _refresh(self, call: Call, timer: SessionTimer, min_se_s: int | None = None) -> None:
        timer._refresh_at = None
        dialog = call.dialog
        if call.finished or dialog is None or not dialog.confirmed or call.session_timer is not timer:
            return
        method = "UPDATE" if timer.peer_update else "INVITE"
        req = dialog.request(method, self.service.contact)
        interval = max(timer.terms.interval, min_se_s or 0)
        req.headers.set_single("Supported", OPTION)
        req.headers.set_single("Session-Expires", f"{interval};refresher=uac")  # uac: us, who send it
        req.headers.set_single("Min-SE", str(max(self.floor, min_se_s or 0)))
        req.headers.set_single("Allow", ALLOW)
        if method == "INVITE":
            # the session as last described, unchanged: the same o= version (RFC 3264 §8)
            req.headers.set_single("Content-Type", "application/sdp")
            req.body = call.sdp.last.encode()
        timer.refreshing = method
        answered = False

        def on_response(parsed: Parsed) -> None:
            nonlocal answered
            status = parsed.message.status_code  # type: ignore[union-attr]
            if status < 200:
                return
            if method == "INVITE":  # every final answer of an INVITE is ACKed, resends too
                if status < 300:
                    ack = dialog.request("ACK", self.service.contact, cseq=parsed.cseq.seq)
                    self.service.endpoint.send_ack(ack, dialog.peer)
                else:  # §17.1.1.3: in the INVITE's transaction, its branch
                    self.service.endpoint.send_ack(failure_ack(req, parsed), dialog.peer, branch=parsed.branch)
            if answered:
                return
            answered = True
            timer.refreshing = None
            self._refresh_answered(call, timer, method, status, parsed, interval)

        def on_timeout() -> None:
            timer.refreshing = None
            if not answered:
                self._expired(call, 408)  # §10: the refresh timed out

        self.service.endpoint.send_request(req, dialog.peer, on_response, on_timeout)

    def _refresh_answered(self, call: Call, timer: SessionTimer, method: str, status: int, parsed: Parsed,
                          interval: int) -> None:
        if call.finished or call.session_timer is not timer:
            return
        loop = asyncio.get_running_loop()
        response = parsed.message
        if 200 <= status < 300:
            if method == "INVITE":
                self.service.apply_refresh_answer(call, response)
            # a peer without timers answers without Session-Expires: our terms stay (§9 table)
            terms = from_response(response, peer_supports=timer.terms.peer_supports)
            timer.terms = terms or Terms(interval, True, timer.terms.peer_supports)
            timer.refreshes += 1
            self._arm(call, timer)
        elif status in (408, 481):  # §10: the dialog is gone
            self._expired(call, status)
        elif status == 422:
            floor = min_se(response)
            if floor is not None and floor > interval:
                self._refresh(call, timer, floor)
        elif status == 491:  # RFC 3261 §14.1: glare, try again after a random wait
            timer._refresh_at = loop.call_later(random.uniform(0.5, 2.0), self._refresh, call, timer)
        elif method == "UPDATE" and status in (405, 501):
            timer.peer_update = False  # it listed UPDATE but does not take it: re-INVITE
            self._refresh(call, timer)
        else:
            # anything else leaves the session unrefreshed: it ends at expiry unless a refresh
            # (ours, tried again at half the remaining time, or the peer's) gets through first
            log.info("session refresh refused", call_id=call.call_id, status=status, method=method)
            timer._refresh_at = loop.call_later(max(0.5, interval / 4), self._refresh, call, timer)
