import base64
import hashlib
import hmac

from gateway.events import Event
from plugins.webhook import sign, verify

# seed-001-trtc.md §9: "\n" and "\t" are real newline and tab characters
TRTC_BODY = (
    b'{\n\t"EventGroupId":\t2,\n\t"EventType":\t204,\n\t"CallbackTs":\t1664209748188,\n'
    b'\t"EventInfo":\t{\n\t\t"RoomId":\t8489,\n\t\t"EventTs":\t1664209748,\n'
    b'\t\t"EventMsTs":\t1664209748180,\n\t\t"UserId":\t"user_85034614",\n\t\t"Reason":\t0\n\t}\n}'
)
TRTC_SIGN = "kkoFeO3Oh2ZHnjtg8tEAQhtXK16/KI05W3BQff8IvGA="


def test_trtc_vector() -> None:
    assert sign("123654", TRTC_BODY) == TRTC_SIGN
    assert sign(b"123654", TRTC_BODY) == TRTC_SIGN


def test_vector_is_sensitive_to_whitespace() -> None:
    # the signature is over raw bytes: re-serialised JSON must not verify
    assert sign("123654", TRTC_BODY.replace(b"\t", b" ")) != TRTC_SIGN


def test_standard_base64_with_padding() -> None:
    sig = sign("k", b"x")
    assert len(sig) == 44 and sig.endswith("=")
    assert base64.b64decode(sig, validate=True) == hmac.new(b"k", b"x", hashlib.sha256).digest()


def test_event_json_verifies_on_receiver_side() -> None:
    event = Event("room.created", "r1", {"name": "Zimmer ü", "max": 3})
    body = event.to_json().encode()
    header = sign("s3cret", body)
    # what a receiver does, without our helper
    expected = base64.b64encode(hmac.new(b"s3cret", body, hashlib.sha256).digest()).decode()
    assert hmac.compare_digest(header, expected)
    assert verify("s3cret", body, header)
    assert not verify("other", body, header)
    assert not verify("s3cret", body + b" ", header)
