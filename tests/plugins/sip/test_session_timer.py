"""RFC 4028 negotiation rules (plugins/sip/session_timer.py) on parsed requests and responses:
§9's refresher table, 422 below our Min-SE, never raising an asked interval, compact forms."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from plugins.sip import message as sipmsg
from plugins.sip.config import SipConfig
from plugins.sip.sdp import Origin, codec
from plugins.sip.session_timer import Terms, allows_update, from_response, margin, negotiate, session_expires


def invite(*headers: str) -> sipmsg.SipRequest:
    text = "\r\n".join(["INVITE sip:1@127.0.0.1 SIP/2.0", "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKst",
                        "From: <sip:a@127.0.0.1>;tag=a1", "To: <sip:1@127.0.0.1>", "Call-ID: st@t",
                        "CSeq: 1 INVITE", *headers, "Content-Length: 0", "", ""])
    return sipmsg.parse(text.encode()).message  # type: ignore[return-value]


def ok(*headers: str) -> sipmsg.SipResponse:
    text = "\r\n".join(["SIP/2.0 200 OK", "Via: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKst",
                        "From: <sip:a@127.0.0.1>;tag=a1", "To: <sip:1@127.0.0.1>;tag=b1", "Call-ID: st@t",
                        "CSeq: 1 INVITE", *headers, "Content-Length: 0", "", ""])
    return sipmsg.parse(text.encode()).message  # type: ignore[return-value]


@pytest.mark.parametrize(("headers", "we_refresh", "require"), [
    ((), True, False),  # no support: refresher=uas
    (("Session-Expires: 1800",), True, False),  # a proxy's header, the caller knows no timers
    (("Supported: timer",), False, True),  # supports, left the choice: it refreshes
    (("Supported: timer", "Session-Expires: 1800;refresher=uac"), False, True),
    (("Supported: timer", "Session-Expires: 1800;refresher=uas"), True, True),
    (("k: timer", "x: 1800;refresher=uas"), True, True),  # compact forms
])
def test_refresher_follows_the_table_of_section_9(headers: tuple[str, ...], we_refresh: bool, require: bool) -> None:
    terms = negotiate(invite(*headers), wanted=1800, floor=90)
    assert isinstance(terms, Terms)
    assert terms.interval == 1800 and terms.we_refresh is we_refresh and terms.peer_supports is require
    answer = dict(terms.answer_headers())
    assert answer["Session-Expires"] == f"1800;refresher={'uas' if we_refresh else 'uac'}"
    assert ("Require" in answer) is require


def test_intervals_below_our_floor_and_above_our_wish() -> None:
    assert negotiate(invite("Supported: timer", "Session-Expires: 60"), wanted=1800, floor=90) == 90  # 422
    raised = negotiate(invite("Session-Expires: 60"), wanted=1800, floor=90)  # it could not act on a 422
    assert isinstance(raised, Terms) and raised.interval == 90
    lowered = negotiate(invite("Supported: timer", "Session-Expires: 7200"), wanted=1800, floor=90)
    assert isinstance(lowered, Terms) and lowered.interval == 1800  # reduced, never raised
    kept = negotiate(invite("Supported: timer", "Session-Expires: 600"), wanted=1800, floor=90)
    assert isinstance(kept, Terms) and kept.interval == 600
    # never below the request's Min-SE, even when we would want less
    floor = negotiate(invite("Supported: timer", "Session-Expires: 7200", "Min-SE: 3600"), wanted=1800, floor=90)
    assert isinstance(floor, Terms) and floor.interval == 3600
    asked = negotiate(invite("Supported: timer", "Min-SE: 2400"), wanted=1800, floor=90)
    assert isinstance(asked, Terms) and asked.interval == 2400


def test_responses_and_helpers() -> None:
    assert from_response(ok()) is None  # §7.2: no Session-Expires, no timer
    ours = from_response(ok("Session-Expires: 900;refresher=uac", "Require: timer"))
    assert ours == Terms(900, True, True)
    theirs = from_response(ok("Session-Expires: 900;refresher=uas"))
    assert theirs is not None and not theirs.we_refresh
    assert session_expires(ok("Session-Expires: nine")) is None
    assert allows_update(ok("Allow: INVITE, ACK, BYE", "Allow: UPDATE")) and not allows_update(ok())
    assert margin(90) == 30 and margin(1800) == 32 and margin(3) == 1


def test_sdp_origin_keeps_its_version_for_an_unchanged_session() -> None:
    origin = Origin(session_id=42)
    first = origin.build("127.0.0.1", 4000, [codec("PCMU")], 101)
    assert "o=mediagate 42 1 IN IP4 127.0.0.1" in first
    assert origin.build("127.0.0.1", 4000, [codec("PCMU")], 101) == first
    held = origin.build("127.0.0.1", 4000, [codec("PCMU")], 101, "sendonly")
    assert "o=mediagate 42 2 " in held and origin.last == held


def test_config_floor_may_be_lowered_for_tests_but_not_above_the_interval() -> None:
    assert SipConfig().session_min_se_s == 90
    assert SipConfig(session_expires_s=4, session_min_se_s=2).session_min_se_s == 2
    with pytest.raises(ValidationError, match="session_min_se_s"):
        SipConfig(session_expires_s=60)
