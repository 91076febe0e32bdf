"""Checking an SDP offer before aiortc sees it: a clear 400 for garbage, 406 (with the
reason) for an offer that has nothing we can receive or send."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiortc.sdp import SessionDescription

from gateway.errors import BadRequest, MediagateError

MAX_SDP_BYTES = 64 * 1024
RECEIVABLE = {"audio": {"opus"}, "video": {"h264", "vp8"}}


class NotAcceptable(MediagateError):
    status = 406


@dataclass
class OfferSummary:
    kinds: list[str] = field(default_factory=list)  # media sections, in order
    codecs: dict[str, set[str]] = field(default_factory=dict)  # kind -> codec names (lower case)
    directions: dict[str, str] = field(default_factory=dict)
    has_candidates: bool = False


def parse_offer(text: str) -> OfferSummary:
    if len(text.encode()) > MAX_SDP_BYTES:
        raise BadRequest(f"SDP offer larger than {MAX_SDP_BYTES} bytes", code="bad_sdp")
    if not text.lstrip().startswith("v=0"):
        raise BadRequest("body is not an SDP offer (must start with v=0)", code="bad_sdp")
    try:
        description = SessionDescription.parse(text)
    except Exception as exc:  # aiortc's parser raises whatever the bad line trips
        raise BadRequest(f"unreadable SDP offer: {exc}", code="bad_sdp") from exc
    summary = OfferSummary()
    for media in description.media:
        if media.kind not in ("audio", "video"):
            continue
        if not media.ice or not media.ice.usernameFragment or not media.dtls or not media.dtls.fingerprints:
            raise BadRequest(f"{media.kind} section lacks ICE credentials or a DTLS fingerprint", code="bad_sdp")
        summary.kinds.append(media.kind)
        summary.codecs.setdefault(media.kind, set()).update(c.name.lower() for c in media.rtp.codecs)
        summary.directions[media.kind] = media.direction or "sendrecv"
        summary.has_candidates = summary.has_candidates or bool(media.ice_candidates)
    if not summary.kinds:
        raise BadRequest("SDP offer has no audio or video section", code="bad_sdp")
    return summary


def check_publishable(summary: OfferSummary) -> None:
    """A WHIP offer must carry at least one codec we can take in."""
    usable = [k for k in summary.kinds if summary.codecs.get(k, set()) & RECEIVABLE[k]]
    if not usable:
        offered = {k: sorted(v) for k, v in summary.codecs.items()}
        raise NotAcceptable(f"no usable codec in the offer {offered}; send H.264 or VP8 video, Opus audio",
                            code="no_usable_codec")


def check_playable(summary: OfferSummary, video_codecs: set[str]) -> None:
    if "video" in summary.kinds and not summary.codecs.get("video", set()) & video_codecs:
        raise NotAcceptable(f"the viewer offers no video codec we send ({', '.join(sorted(video_codecs))})",
                            code="no_usable_codec")
    if "audio" in summary.kinds and "opus" not in summary.codecs.get("audio", set()) and "video" not in summary.kinds:
        raise NotAcceptable("the viewer offers no Opus audio", code="no_usable_codec")
