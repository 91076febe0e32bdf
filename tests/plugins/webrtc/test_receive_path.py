"""Unit tests for the cheaper receive path: the incremental video jitter buffer gives the
frames aiortc's does (in order, reordered, with a loss), the fast SRTP unprotect matches
pylibsrtp's, and a coroutine that suspends is finished by a task."""

from __future__ import annotations

import asyncio
import random

import pylibsrtp
from aiortc.jitterbuffer import JitterBuffer
from aiortc.rtp import RtpPacket

from plugins.webrtc import fastpath
from plugins.webrtc.rtp_receive import FrameBuffer


def packets(frames: int, per_frame: int, start_seq: int = 65500) -> list[RtpPacket]:
    out = []
    seq = start_seq
    for f in range(frames):
        for i in range(per_frame + f % 3):
            p = RtpPacket(payload_type=96, sequence_number=seq & 0xFFFF, timestamp=(1000 + 3000 * f) & 0xFFFFFFFF)
            p._data = bytes([f, i])  # type: ignore[attr-defined]
            out.append(p)
            seq += 1
    return out


def frames_of(buffer: JitterBuffer, sequence: list[RtpPacket]) -> list[tuple[int, bytes]]:
    got = []
    for p in sequence:
        _, frame = buffer.add(p)
        if frame is not None:
            got.append((frame.timestamp, frame.data))
    return got


def test_frame_buffer_matches_aiortc() -> None:
    rng = random.Random(7)
    stream = packets(40, 5)
    reordered = stream[:]
    for i in range(0, len(reordered) - 3, 7):  # local swaps, as a network does
        reordered[i], reordered[i + 2] = reordered[i + 2], reordered[i]
    lossy = [p for p in stream if rng.random() > 0.05]
    for sequence in (stream, reordered, lossy):
        expected = frames_of(JitterBuffer(capacity=512, is_video=True), sequence)
        assert frames_of(FrameBuffer(512), sequence) == expected
        assert expected  # the comparison saw frames
    assert len(frames_of(FrameBuffer(512), stream)) == 39  # the last frame waits for a next one


def test_fast_unprotect_matches_pylibsrtp() -> None:
    key = bytes(range(30))
    tx = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
    rx = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))
    plain = [RtpPacket(payload_type=96, sequence_number=n, ssrc=1234, payload=bytes([n]) * 900).serialize()
             for n in range(5)]
    protected = [tx.protect(p) for p in plain]
    assert [fastpath.unprotect(rx, p) for p in protected] == plain
    assert fastpath.unprotect(rx, protected[0]) is None  # a replay fails authentication
    assert fastpath.unprotect(rx, protected[1][:-1] + b"\x00") is None


async def test_drive_runs_now_or_finishes_in_a_task() -> None:
    done: list[str] = []

    async def quick() -> None:
        done.append("quick")

    async def slow(future: asyncio.Future[int]) -> None:
        done.append(f"slow {await future}")

    fastpath.drive(quick())
    assert done == ["quick"]
    future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    fastpath.drive(slow(future))
    future.set_result(5)
    for _ in range(5):
        await asyncio.sleep(0)
    assert done == ["quick", "slow 5"]


def test_sdpfrag_parse() -> None:
    from gateway.errors import BadRequest
    from plugins.webrtc.trickle import parse_sdpfrag

    frag = parse_sdpfrag("a=ice-ufrag:abcd\r\na=ice-pwd:secret\r\nm=audio 9 UDP/TLS/RTP/SAVPF 0\r\na=mid:0\r\n"
                         "a=candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host\r\nm=video 9 UDP/TLS/RTP/SAVPF 0\r\n"
                         "a=mid:1\r\na=candidate:2 1 udp 2130706431 127.0.0.1 5002 typ host\r\na=end-of-candidates\r\n")
    assert (frag.ufrag, frag.pwd, frag.end_of_candidates) == ("abcd", "secret", True)
    assert [mid for mid, _ in frag.candidates] == ["0", "1"]
    try:
        parse_sdpfrag("candidate without a=")
    except BadRequest as exc:
        assert exc.code == "bad_sdpfrag"
    else:
        raise AssertionError("a line that is not SDP was accepted")
