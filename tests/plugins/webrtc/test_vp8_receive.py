"""Unit tests for the lean VP8 receive path: the struct RTP parser agrees with aiortc's and
never raises on hostile bytes; the VP8 frame assembler hands out whole frames in order
(reordering, losses filled by retransmission, losses never filled, sequence wrap, a sender
without marker bits); NACK and receiver-report statistics match aiortc's."""

from __future__ import annotations

import random
import struct

from aiortc.rate import RemoteBitrateEstimator
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtcrtpreceiver import NackGenerator, StreamStatistics
from aiortc.rtp import HeaderExtensionsMap, RtpPacket

from plugins.webrtc import remb
from plugins.webrtc.rtp_parse import abs_send_time, find_extension, parse_header, vp8_descriptor
from plugins.webrtc.vp8_frames import CAPACITY, MAX_HELD_FRAMES, Vp8Frames
from plugins.webrtc.vp8_receiver import Nacks, Statistics

ABS_SEND_TIME = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def extensions_map() -> HeaderExtensionsMap:
    ext = HeaderExtensionsMap()
    ext.configure(RTCRtpParameters(headerExtensions=[
        RTCRtpHeaderExtensionParameters(id=1, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
        RTCRtpHeaderExtensionParameters(id=3, uri=ABS_SEND_TIME)]))
    return ext


# ------------------------------------------------------------------ RTP header
def test_header_matches_aiortc() -> None:
    ext = extensions_map()
    for marker, csrc, padding, with_ext in [(0, [], 0, False), (1, [7, 8], 0, True), (1, [], 17, True),
                                            (0, [1], 1, False)]:
        p = RtpPacket(payload_type=96, marker=marker, sequence_number=65535, timestamp=0xFFFFFFF0, ssrc=0xCAFEBABE,
                      payload=bytes(range(200)))
        p.csrc = csrc
        p.padding_size = padding
        if with_ext:
            p.extensions.mid = "0"
            p.extensions.abs_send_time = 0x123456
        data = p.serialize(ext)
        ours = parse_header(data)
        theirs = RtpPacket.parse(data, ext)
        assert ours is not None
        assert (ours.marker, ours.payload_type, ours.sequence_number, ours.timestamp, ours.ssrc) == (
            bool(theirs.marker), theirs.payload_type, theirs.sequence_number, theirs.timestamp, theirs.ssrc)
        assert data[ours.payload_start:ours.payload_end] == theirs.payload
        assert ours.padding == theirs.padding_size
        assert abs_send_time(data, ours, 3) == theirs.extensions.abs_send_time
        assert find_extension(data, ours, 1) == (b"0" if with_ext else None)


def test_hostile_headers_give_none() -> None:
    good = RtpPacket(payload_type=96, sequence_number=1, payload=b"\x10\x00\x9d").serialize()
    assert parse_header(good) is not None
    assert parse_header(b"") is None
    assert parse_header(good[:11]) is None  # shorter than the fixed header
    assert parse_header(bytes([0x40]) + good[1:]) is None  # version 1
    assert parse_header(bytes([0x8F]) + good[1:]) is None  # 15 CSRCs in a 15-byte packet
    with_ext = bytes([0x90]) + good[1:12] + b"\xbe\xde\x00\x05" + b"\x10\x01"
    assert parse_header(with_ext) is None  # extension length beyond the packet
    assert parse_header(bytes([0x90]) + good[1:12] + b"\xbe") is None  # truncated extension profile
    assert parse_header(bytes([0xA0]) + good[1:-1] + b"\x00") is None  # padding count 0
    assert parse_header(bytes([0xA0]) + good[1:-1] + b"\xff") is None  # padding beyond the payload
    assert parse_header(bytes([0xA0]) + good[1:12] + b"\x01") is not None  # padding of exactly itself


def test_hostile_extensions_give_none() -> None:
    def packet(profile: int, body: bytes) -> bytes:
        body += b"\x00" * (-len(body) % 4)
        return bytes([0x90, 96]) + bytes(10) + struct.pack("!HH", profile, len(body) // 4) + body + b"payload"

    one_byte = packet(0xBEDE, b"\x00\x32\x01\x02\x03")  # padding byte, then id 3, 3 bytes
    header = parse_header(one_byte)
    assert header is not None and abs_send_time(one_byte, header, 3) == 0x010203
    truncated = packet(0xBEDE, b"\x3f\x01")  # id 3 claims 16 bytes in a 4-byte block
    header = parse_header(truncated)
    assert header is not None and find_extension(truncated, header, 3) is None
    stop = packet(0xBEDE, b"\xf0\x32\x01\x02\x03")  # id 15 ends the parse
    header = parse_header(stop)
    assert header is not None and find_extension(stop, header, 3) is None
    two_byte = packet(0x1000, b"\x00\x03\x03\x0a\x0b\x0c")
    header = parse_header(two_byte)
    assert header is not None and abs_send_time(two_byte, header, 3) == 0x0A0B0C
    two_truncated = packet(0x1000, b"\x03\x09\x01")
    header = parse_header(two_truncated)
    assert header is not None and find_extension(two_truncated, header, 3) is None
    wrong_size = packet(0xBEDE, b"\x31\x01\x02")  # abs-send-time must be 3 bytes
    header = parse_header(wrong_size)
    assert header is not None and abs_send_time(wrong_size, header, 3) is None
    assert find_extension(one_byte, parse_header(one_byte), None) is None  # type: ignore[arg-type]


def test_fuzzed_packets_never_raise() -> None:
    rng = random.Random(3)
    ext = extensions_map()
    base = RtpPacket(payload_type=96, marker=1, sequence_number=5, ssrc=9, payload=b"\x90\x80\x05\x10" * 20)
    base.extensions.abs_send_time = 77
    base.extensions.mid = "1"
    seed = base.serialize(ext)
    for _ in range(5000):
        data = bytearray(seed[:rng.randrange(len(seed) + 1)])
        for _ in range(rng.randrange(4)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        if rng.random() < 0.2:
            data = bytearray(rng.randbytes(rng.randrange(40)))
        raw = bytes(data)
        header = parse_header(raw)
        if header is None:
            continue
        assert 0 <= header.payload_start <= header.payload_end <= len(raw)
        assert header.extension_end <= header.payload_start
        for ext_id in (1, 3, 14):
            value = find_extension(raw, header, ext_id)
            assert value is None or len(value) <= header.extension_end - header.extension_start
        descriptor = vp8_descriptor(raw, header.payload_start, header.payload_end)
        assert descriptor is None or header.payload_start < descriptor[1] <= header.payload_end


# ------------------------------------------------------------------ VP8 descriptor
def test_vp8_descriptor_forms() -> None:
    assert vp8_descriptor(b"\x10\x9d", 0, 2) == (True, 1)  # S=1, PID 0
    assert vp8_descriptor(b"\x00\x9d", 0, 2) == (False, 1)  # a continuation
    assert vp8_descriptor(b"\x11\x9d", 0, 2) == (False, 1)  # S=1 in partition 1: not a frame start
    assert vp8_descriptor(b"\x90\x80\x05\x9d", 0, 4) == (True, 3)  # 7-bit picture id
    assert vp8_descriptor(b"\x90\x80\x85\x05\x9d", 0, 5) == (True, 4)  # 15-bit picture id
    assert vp8_descriptor(b"\x90\xf0\x85\x05\x01\x20\x9d", 0, 7) == (True, 6)  # I, L, T, K
    assert vp8_descriptor(b"xx\x10\x9d", 2, 4) == (True, 3)  # offsets within a datagram
    assert vp8_descriptor(b"\x10", 0, 1) == (True, 1)  # no data after the descriptor
    for truncated in (b"", b"\x90", b"\x90\x80", b"\x90\xc0\x85", b"\x90\xf0\x05\x01"):
        assert vp8_descriptor(truncated, 0, len(truncated)) is None
    assert vp8_descriptor(b"\x10\x9d", 1, 1) is None


# ------------------------------------------------------------------ frames
def vp8_stream(frames: int, start_seq: int = 65000, *, per_frame: int = 4, keyframe_every: int = 10,
               markers: bool = True) -> list[tuple[int, int, bool, bool, bytes]]:
    """Packets (seq, timestamp, starts a frame, marker, VP8 data) of `frames` frames; data
    byte 0 of a frame carries the VP8 P bit, the rest name the frame and the part."""
    out = []
    seq = start_seq
    for f in range(frames):
        parts = per_frame + f % 3
        for i in range(parts):
            first = (0 if f % keyframe_every == 0 else 1) if i == 0 else 0x80
            out.append((seq & 0xFFFF, (1000 + 3000 * f) & 0xFFFFFFFF, i == 0, markers and i == parts - 1,
                        bytes([first, f & 0xFF, i])))
            seq += 1
    return out


def frames_out(assembler: Vp8Frames, packets: list[tuple[int, int, bool, bool, bytes]]) -> list[tuple[int, bytes]]:
    got = []
    for p in packets:
        for frame in assembler.add(*p) or ():
            got.append((frame.timestamp, frame.data))
    return got


def expected_frames(packets: list[tuple[int, int, bool, bool, bytes]]) -> list[tuple[int, bytes]]:
    by_ts: dict[int, list[tuple[int, bytes]]] = {}
    for seq, ts, _, _, data in packets:
        by_ts.setdefault(ts, []).append((seq, data))
    return [(ts, b"".join(d for _, d in parts)) for ts, parts in by_ts.items()]


def test_frames_in_order_at_their_last_packet() -> None:
    stream = vp8_stream(30)
    assembler = Vp8Frames()
    got = []
    for p in stream:
        frames = assembler.add(*p)
        if frames:
            assert p[3]  # handed out with the marker packet, not one frame late
            got += [(f.timestamp, f.data) for f in frames]
    assert got == expected_frames(stream)
    assert not assembler.picture_lost


def test_reordered_packets_give_the_same_frames() -> None:
    stream = vp8_stream(30)
    reordered = stream[:]
    for i in range(0, len(reordered) - 3, 5):
        reordered[i], reordered[i + 2] = reordered[i + 2], reordered[i]
    assert frames_out(Vp8Frames(), reordered) == expected_frames(stream)


def test_retransmission_fills_the_hole_and_frames_follow_in_order() -> None:
    stream = vp8_stream(20)
    lost = stream.pop(23)  # a packet of frame 4, retransmitted 5 packets later
    late = [*stream[:28], lost, *stream[28:]]
    assembler = Vp8Frames()
    assert frames_out(assembler, late) == expected_frames(vp8_stream(20))
    assert not assembler.picture_lost


def test_a_hole_never_filled_waits_for_a_keyframe_and_asks_for_one() -> None:
    stream = vp8_stream(40, keyframe_every=25)
    missing = stream[30]  # in frame 6
    lossy = [p for p in stream if p is not missing]
    assembler = Vp8Frames()
    got = frames_out(assembler, lossy)
    timestamps = [ts for ts, _ in got]
    lost_ts = missing[1]
    assert timestamps == sorted(timestamps)
    assert lost_ts not in timestamps
    before = [ts for ts in timestamps if ts < lost_ts]
    after = [ts for ts in timestamps if ts > lost_ts]
    assert len(before) == 6  # frames 0-5
    assert after and after[0] == 1000 + 3000 * 25  # resumed at the keyframe, nothing in between
    assert assembler.picture_lost  # the receiver sends a PLI


def test_gives_up_on_a_hole_after_held_frames() -> None:
    stream = vp8_stream(MAX_HELD_FRAMES + 10, keyframe_every=1000)
    lossy = [p for p in stream if p != stream[10]]
    assembler = Vp8Frames()
    frames_out(assembler, lossy)
    assert assembler.picture_lost and assembler.next_seq is None


def test_a_complete_keyframe_jumps_a_hole() -> None:
    stream = vp8_stream(30, keyframe_every=10)
    lossy = [p for p in stream if p != stream[5]]  # frame 1 incomplete, keyframe at frame 10
    got = frames_out(Vp8Frames(), lossy)
    assert [ts for ts, _ in got][:2] == [1000, 1000 + 3000 * 10]


def test_starting_mid_stream_waits_for_a_keyframe() -> None:
    stream = vp8_stream(40, keyframe_every=20)
    assembler = Vp8Frames()
    got = frames_out(assembler, stream[9:])  # from the middle of frame 2
    assert got and got[0][0] == 1000 + 3000 * 20
    assert assembler.dropped_frames >= 17


def test_sequence_wrap_and_sender_without_markers() -> None:
    stream = vp8_stream(30, start_seq=65530, markers=False)
    got = frames_out(Vp8Frames(), stream)
    assert got == expected_frames(stream)[:-1]  # each frame completes at the next one's start


def test_duplicates_and_far_jumps() -> None:
    stream = vp8_stream(10)
    doubled = [p for p in stream for _ in (0, 1)]
    assert frames_out(Vp8Frames(), doubled) == expected_frames(stream)
    assembler = Vp8Frames()
    frames_out(assembler, stream)
    jump = [((seq + CAPACITY + 100) & 0xFFFF, ts + 90000, start, marker, data)
            for seq, ts, start, marker, data in vp8_stream(3, keyframe_every=5)]
    got = frames_out(assembler, jump)
    assert assembler.picture_lost or got  # lost sync, resumed at the keyframe


def test_random_streams_never_raise_and_stay_in_order() -> None:
    rng = random.Random(11)
    for _ in range(40):
        stream = vp8_stream(60, start_seq=rng.randrange(65536), keyframe_every=rng.choice([5, 30, 1000]))
        mangled = [p for p in stream if rng.random() > 0.04]
        for i in range(0, len(mangled) - 4, rng.randrange(3, 9)):
            j = i + rng.randrange(1, 4)
            mangled[i], mangled[j] = mangled[j], mangled[i]
        mangled += rng.sample(stream, 5)  # late duplicates
        got = frames_out(Vp8Frames(), mangled)
        valid = dict(expected_frames(stream))
        last = -1
        for ts, data in got:
            assert valid[ts] == data  # only whole frames
            assert ts > last  # in decoding order
            last = ts


# ------------------------------------------------------------------ NACK and statistics
def test_nacks_match_aiortc() -> None:
    rng = random.Random(5)
    seqs = []
    seq = 65400
    for _ in range(3000):
        r = rng.random()
        if r < 0.05:
            seq += rng.randrange(2, 6)  # a loss
        elif r < 0.07 and seqs:
            seqs.append(rng.choice(seqs[-20:]))  # a retransmission or duplicate
            continue
        else:
            seq += 1
        seqs.append(seq & 0xFFFF)
    ours, theirs = Nacks(), NackGenerator()
    for s in seqs:
        assert ours.add(s) == theirs.add(RtpPacket(sequence_number=s))
        assert ours.missing == theirs.missing


def test_statistics_match_aiortc() -> None:
    ours, theirs = Statistics(90000), StreamStatistics(90000)
    for i, s in enumerate([65530, 65531, 65533, 65532, 65535, 0, 1, 5, 3, 6]):
        ours.add_rtp(s, 3000 * i)
        theirs.add(RtpPacket(sequence_number=s, timestamp=3000 * i))
        assert (ours.max_seq, ours.cycles, ours.packets_received, ours.packets_lost) == (
            theirs.max_seq, theirs.cycles, theirs.packets_received, theirs.packets_lost)


def test_light_remb_estimator_gives_aiortc_results() -> None:
    rng = random.Random(9)
    ours, theirs = RemoteBitrateEstimator(), RemoteBitrateEstimator()
    remb.lighten(ours)
    arrival, sent = 10_000, 0
    outputs = []
    for frame in range(3000):
        sent += 33  # ms of send time per frame
        arrival += 33 + rng.randrange(-3, 4) + (8 if 1000 < frame < 1300 else 0)  # a congested stretch
        if rng.random() < 0.01:
            arrival += 1500  # a pause longer than the rate window
        abs_send = ((sent << 18) // 1000) & 0xFFFFFF
        size = rng.randrange(3000, 14000)
        a = ours.add(abs_send_time=abs_send, arrival_time_ms=arrival, payload_size=size, ssrc=7)
        b = theirs.add(abs_send_time=abs_send, arrival_time_ms=arrival, payload_size=size, ssrc=7)
        assert a == b
        assert ours.incoming_bitrate.rate(arrival) == theirs.incoming_bitrate.rate(arrival)
        outputs.append(a)
    assert sum(o is not None for o in outputs) > 10  # REMBs were produced along the way
