"""SIP messages (RFC 3261 §7): aiosipua's parser, checked, and the responses we build.

aiosipua parses leniently; we add the checks a UAS needs before it may answer (§8.2:
mandatory headers, a parsable CSeq whose method matches, a Via with a branch, a sane
Content-Length) and raise :class:`BadMessage` otherwise — the caller answers 400 when it can.
Responses are built here (§8.2.6) so a To-tag is added once, only when the request had none.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from aiosipua import headers as _headers
from aiosipua.header_codec import parse_address, parse_cseq, parse_uri, parse_via
from aiosipua.headers import Address, CSeq, SipUri, Via
from aiosipua.message import SipMessage, SipRequest, SipResponse

from gateway.ids import random_hex

__all__ = ["Address", "BadMessage", "CSeq", "Parsed", "SipRequest", "SipResponse", "SipUri", "Via",
           "new_branch", "new_tag", "parse", "parse_address", "parse_uri", "response", "tag_of"]

MAX_MESSAGE = 65535
REASONS = {100: "Trying", 180: "Ringing", 183: "Session Progress", 200: "OK", 202: "Accepted",
           400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 407: "Proxy Authentication Required", 408: "Request Timeout",
           415: "Unsupported Media Type", 420: "Bad Extension", 422: "Session Interval Too Small",
           423: "Interval Too Brief",
           480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 482: "Loop Detected",
           483: "Too Many Hops", 486: "Busy Here", 487: "Request Terminated", 488: "Not Acceptable Here",
           491: "Request Pending", 500: "Server Internal Error", 501: "Not Implemented",
           503: "Service Unavailable", 505: "Version Not Supported", 603: "Decline"}
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
# header names are case-insensitive, but some peers (sipp's header regexps among them) match
# them as spelt: RFC 4028's Min-SE, not the "Min-Se" aiosipua's title-case fallback writes
_headers._PRETTY_NAMES.setdefault("min-se", "Min-SE")


class BadMessage(ValueError):
    """A message we cannot process. `request` is set when it is a request we can still answer."""

    def __init__(self, reason: str, request: SipRequest | None = None, status: int = 400) -> None:
        super().__init__(reason)
        self.reason = reason
        self.request = request
        self.status = status


@dataclass(slots=True)
class Parsed:
    """A checked message with the header values every layer needs, parsed once."""

    message: SipRequest | SipResponse
    via: Via
    cseq: CSeq
    call_id: str
    from_tag: str | None
    to_tag: str | None

    @property
    def branch(self) -> str:
        return self.via.branch or ""

    @property
    def is_request(self) -> bool:
        return isinstance(self.message, SipRequest)


# Tags must be cryptographically random (RFC 3261 §19.3); gateway.ids hands out the OS's
# randomness without a syscall per id (which cost the loop a GIL switch interval per call).


def new_id(bits: int) -> str:
    return random_hex(bits)


def new_tag() -> str:
    return new_id(48)


def new_branch() -> str:
    return "z9hG4bK" + new_id(64)  # RFC 3261 §8.1.1.7 magic cookie


def tag_of(value: str | None) -> str | None:
    if not value:
        return None
    try:
        return parse_address(value).tag
    except Exception:  # aiosipua raises anything on garbage
        return None


def parse(data: bytes) -> Parsed:
    if len(data) > MAX_MESSAGE:
        raise BadMessage("message too large")
    try:
        message = SipMessage.parse(data)
    except Exception as exc:  # ValueError on bad lines, anything else on hostile input
        raise BadMessage(f"unparsable: {exc}", _salvage(data)) from None
    request = message if isinstance(message, SipRequest) else None
    first_line = data.split(b"\n", 1)[0].strip()
    try:
        return _check(message, first_line)
    except BadMessage as exc:
        exc.request = request
        raise
    except Exception as exc:
        raise BadMessage(f"bad header: {exc}", request) from None


_SALVAGED = {"via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To",
             "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq"}


def _salvage(data: bytes) -> SipRequest | None:
    """Enough of a request aiosipua refused (too many headers, ...) to send it a 400."""
    head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
    parts = head[0].split(" ")
    if len(parts) != 3 or not _TOKEN.match(parts[0]) or parts[0] == "ACK" or not parts[2].startswith("SIP/"):
        return None
    request = SipRequest(method=parts[0], uri=parts[1])
    for line in head[1:300]:
        name, colon, value = line.partition(":")
        key = _SALVAGED.get(name.strip().lower())
        if colon and key and not request.headers.get_first(key):
            request.headers.append(key, value.strip())
    return request if request.headers.get_first("via") else None


def _check(message: SipRequest | SipResponse, first_line: bytes) -> Parsed:
    headers = message.headers
    for name in ("via", "from", "to", "call-id", "cseq"):
        if not headers.get_first(name):
            raise BadMessage(f"missing {name}")
    if isinstance(message, SipRequest):
        if not _TOKEN.match(message.method):
            raise BadMessage("bad method")
        # from the raw line: aiosipua's serialize() rewrites Content-Length as a side effect
        if first_line.rsplit(b" ", 1)[-1].upper() != b"SIP/2.0":
            raise BadMessage("bad version", status=505)
        if ":" not in message.uri:
            raise BadMessage("bad request URI")
    elif not 100 <= message.status_code <= 699:
        raise BadMessage("bad status code")
    cseq = parse_cseq(headers.get_first("cseq") or "")
    if not 0 <= cseq.seq < 2**31 or not cseq.method:
        raise BadMessage("bad CSeq")
    if isinstance(message, SipRequest) and cseq.method != message.method:
        raise BadMessage("CSeq method does not match")
    length = headers.get_first("content-length")
    if length is not None:
        if not length.strip().isdigit():
            raise BadMessage("bad Content-Length")
        if int(length) > len(message.body):
            raise BadMessage("body shorter than Content-Length")
    via = parse_via(headers.get_first("via") or "")
    if not via.host:
        raise BadMessage("bad Via")
    from_tag = parse_address(headers.get_first("from") or "").tag
    to_tag = parse_address(headers.get_first("to") or "").tag
    return Parsed(message, via, cseq, (headers.get_first("call-id") or "").strip(), from_tag, to_tag)


# RFC 3261 option tags this UA implements: a request that requires any other is refused with
# 420 (Bad Extension) listing them in Unsupported (§8.2.2.3)
SUPPORTED_OPTIONS = frozenset({"timer"})
MAX_UNSUPPORTED_LISTED = 8  # an answer never grows with a hostile request's header count


def unsupported_options(request: SipRequest) -> list[str]:
    """The option tags of `request`'s Require headers this UA does not implement."""
    tags: list[str] = []
    for value in request.headers.get("require") or []:
        for tag in str(value).split(","):
            tag = tag.strip().lower()
            if tag and tag not in SUPPORTED_OPTIONS and tag not in tags:
                tags.append(tag)
                if len(tags) == MAX_UNSUPPORTED_LISTED:
                    return tags
    return tags


def is_sdp(message: SipMessage) -> bool:
    """Content-Type application/sdp, with parameters or in any case (aiosipua wants it exact)."""
    ctype = (message.headers.get_first("content-type") or "").split(";")[0].strip().lower()
    return ctype == "application/sdp" and bool(message.body.strip())


def response(request: SipRequest, status: int, reason: str | None = None, *, to_tag: str | None = None,
             headers: list[tuple[str, str]] | None = None, body: bytes = b"",
             content_type: str | None = None) -> SipResponse:
    """RFC 3261 §8.2.6.2: Via, From, Call-ID, CSeq copied; To copied, its tag added only if absent."""
    out = SipResponse(status_code=status, reason_phrase=reason or REASONS.get(status, "Unknown"))
    for name in ("via", "record-route"):
        for value in request.headers.get(name):
            out.headers.append(name.title() if name == "via" else "Record-Route", value)
    out.headers.set_single("From", request.headers.get_first("from") or "")
    to = request.headers.get_first("to") or ""
    if to_tag and tag_of(to) is None and status != 100:
        to = f"{to};tag={to_tag}"
    out.headers.set_single("To", to)
    out.headers.set_single("Call-ID", request.headers.get_first("call-id") or "")
    out.headers.set_single("CSeq", request.headers.get_first("cseq") or "")
    for name, value in headers or ():
        out.headers.append(name, value)
    if body:
        out.headers.set_single("Content-Type", content_type or "application/sdp")
        out.body = body
    return out
