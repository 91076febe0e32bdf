"""DTMF: RFC 4733 telephone-events on RTP, and SIP INFO bodies (application/dtmf-relay)."""

from __future__ import annotations

import re
import struct

EVENTS = "0123456789*#ABCD"
VALID = set(EVENTS)
_EVENT = struct.Struct("!BBH")


def event_digit(payload: bytes) -> tuple[str, bool, int] | None:
    """(digit, end bit, duration) of a telephone-event payload; None for other events."""
    if len(payload) < 4:
        return None
    event, flags, duration = _EVENT.unpack_from(payload)
    if event >= len(EVENTS):
        return None
    return EVENTS[event], bool(flags & 0x80), duration


def event_payloads(digit: str, duration_ms: int, volume: int = 10) -> list[tuple[bytes, bool]]:
    """The (payload, marker) sequence of one digit, a packet per 20 ms, the end sent thrice."""
    code = EVENTS.index(digit)
    steps = max(1, duration_ms // 20)
    out = [(_EVENT.pack(code, volume, 160 * (i + 1)), i == 0) for i in range(steps)]
    end = _EVENT.pack(code, 0x80 | volume, 160 * steps)
    return out + [(end, False)] * 3


def clean_digits(digits: str) -> str:
    """Keep the seed's DTMF characters (0-9, A-D, a-d, #, *); others are ignored."""
    return "".join(c for c in digits.upper() if c in VALID)


_SIGNAL = re.compile(r"^\s*signal\s*=\s*(\S)", re.IGNORECASE | re.MULTILINE)


def info_digit(content_type: str, body: str) -> str | None:
    """The digit of a SIP INFO: ``application/dtmf-relay`` (Signal=5) or ``application/dtmf``."""
    ctype = content_type.split(";")[0].strip().lower()
    if ctype == "application/dtmf-relay":
        match = _SIGNAL.search(body)
        digit = match.group(1).upper() if match else ""
    elif ctype == "application/dtmf":
        digit = body.strip()[:2].upper()
        if digit.isdigit() and int(digit) < 16:
            digit = EVENTS[int(digit)]
    else:
        return None
    return digit if digit in VALID else None
