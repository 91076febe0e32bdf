"""Unit tests for the native VP8 receive path (plugins/webrtc/_rtpin.c): its frame assembler,
NACK generator and statistics agree with the Python ones (vp8_frames, vp8_receiver) on random
streams; RTX fills a hole; hostile datagrams never crash it or read past their end; a reader
on a real socket unprotects SRTP, hands frames over and passes everything else on."""

from __future__ import annotations

import random
import socket
import struct
import threading
import time
from typing import Any

import pylibsrtp
import pytest
from aiortc.rtp import RtpPacket

from plugins.webrtc import native_rx
from plugins.webrtc.vp8_frames import Vp8Frames
from plugins.webrtc.vp8_receiver import Nacks, Statistics
from tests.plugins.webrtc.test_vp8_receive import expected_frames, vp8_stream

_rtpin = pytest.importorskip("plugins.webrtc._rtpin")

VP8, RTX = 96, 97
MEDIA_SSRC, RTX_SSRC = 0x1234, 0x5678


class Events:
    """A Vp8Stream's callback: everything it was handed."""

    def __init__(self) -> None:
        self.frames: list[tuple[int, bytes, bool]] = []
        self.nacks: list[tuple[int, list[int]]] = []
        self.plis: list[int] = []
        self.rembs: list[tuple[int, int, int, int]] = []
        self.stats: dict[int, tuple[Any, ...]] = {}
        self.threads: set[int] = set()

    def __call__(self, frames: Any, rembs: Any, nack: Any, pli: Any, stats: Any) -> None:
        self.threads.add(threading.get_ident())
        self.frames += frames or []
        self.rembs += rembs or []
        if nack is not None:
            self.nacks.append(nack)
        if pli is not None:
            self.plis.append(pli)
        for entry in stats or ():
            self.stats[entry[0]] = entry


def new_stream(events: Events | None = None, abs_id: int = 3) -> Any:
    return _rtpin.Vp8Stream(events or Events(), [VP8], [RTX], abs_id, True)


def rtp(seq: int, ts: int, start: bool, marker: bool, data: bytes, *, ssrc: int = MEDIA_SSRC, pt: int = VP8,
        abs_send_time: int | None = None) -> bytes:
    """An RTP packet with a VP8 descriptor (S bit, a 15-bit picture id) in front of `data`."""
    descriptor = bytes([0x90 if start else 0x80, 0x80, 0x80 | (seq >> 8) & 0x7F, seq & 0xFF])
    header = bytes([0x90 if abs_send_time is not None else 0x80, (0x80 if marker else 0) | pt])
    header += struct.pack("!HII", seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
    if abs_send_time is not None:
        header += struct.pack("!HH", 0xBEDE, 1) + bytes([0x32]) + abs_send_time.to_bytes(3, "big")
    return header + descriptor + data


def mangle(rng: random.Random, stream: list[Any]) -> list[Any]:
    out = [p for p in stream if rng.random() > rng.choice([0, 0.01, 0.05, 0.3])]
    for i in range(0, len(out) - 4, rng.randrange(3, 9)):
        j = i + rng.randrange(1, 4)
        out[i], out[j] = out[j], out[i]
    out += rng.sample(stream, min(5, len(stream)))  # late duplicates
    if rng.random() < 0.2:  # far jumps
        out += [((s + rng.randrange(65536)) & 0xFFFF, t, st, m, d) for s, t, st, m, d in stream[:30]]
    return out


# ------------------------------------------------------------------ against the Python path
def test_assembler_matches_vp8_frames() -> None:
    rng = random.Random(1)
    for _ in range(200):
        stream = vp8_stream(rng.randrange(5, 150), start_seq=rng.randrange(65536),
                            keyframe_every=rng.choice([5, 30, 1000]), markers=rng.random() > 0.2,
                            per_frame=rng.randrange(1, 8))
        python, native = Vp8Frames(), new_stream()
        for packet in mangle(rng, stream):
            theirs = [(f.timestamp, f.data, f.keyframe) for f in python.add(*packet) or ()]
            lost, python.picture_lost = python.picture_lost, False
            assert native._assemble(*packet) == (theirs, lost), packet
        assert (native.frames_out, native.dropped_frames) == (python.frames_out, python.dropped_frames)


def test_handle_gives_the_frames_nacks_and_statistics_of_the_python_path() -> None:
    rng = random.Random(2)
    for _ in range(30):
        stream = vp8_stream(80, start_seq=rng.randrange(65536), keyframe_every=rng.choice([10, 1000]))
        packets = mangle(rng, stream)
        events = Events()
        native = new_stream(events)
        frames, nacks, stats = Vp8Frames(), Nacks(), Statistics(90000)
        python_frames, python_nacks = [], []
        for seq, ts, start, marker, data in packets:
            assert native.handle(rtp(seq, ts, start, marker, data), 0)
            stats.add_rtp(seq, ts)
            if nacks.add(seq):
                python_nacks.append(sorted(nacks.missing))
            python_frames += [(f.timestamp, f.data, f.keyframe) for f in frames.add(seq, ts, start, marker, data) or ()]
            assert native._missing() == nacks.missing
        assert events.frames == python_frames
        assert [missing for _, missing in events.nacks] == python_nacks
        assert all(ssrc == MEDIA_SSRC for ssrc, _ in events.nacks)
        native.flush()
        entry = events.stats[MEDIA_SSRC]
        assert entry[1:5] == (stats.packets_received, stats.base_seq, stats.max_seq, stats.cycles)
        assert entry[7] == stats._last_timestamp


def test_rtx_fills_the_hole_and_other_payload_types_are_not_taken() -> None:
    events = Events()
    native = new_stream(events)
    native.set_rtx_ssrc(RTX_SSRC, MEDIA_SSRC)
    stream = vp8_stream(10)
    lost = stream.pop(6)
    for packet in stream:
        native.handle(rtp(*packet), 0)
    assert events.nacks and lost[0] in events.nacks[-1][1]
    held = len(events.frames)
    seq, ts, start, marker, data = lost
    original = rtp(seq, ts, start, marker, data)
    retransmitted = original[:1] + bytes([RTX | (original[1] & 0x80)]) + struct.pack("!H", 7) + original[4:8] \
        + struct.pack("!I", RTX_SSRC) + struct.pack("!H", seq) + original[12:]
    assert native.handle(retransmitted, 0)
    native.flush()
    assert [(ts, data) for ts, data, _ in events.frames] == expected_frames(vp8_stream(10))
    assert len(events.frames) > held
    assert RTX_SSRC in events.stats  # the RTX stream has its own receiver report statistics
    assert not native.handle(rtp(1, 1, True, True, b"\x00", pt=111), 0)  # Opus: not this stream's


def test_remb_samples_one_per_frame_with_its_bytes() -> None:
    events = Events()
    native = new_stream(events)
    stream = vp8_stream(4, per_frame=3)
    for i, packet in enumerate(stream):
        native.handle(rtp(*packet, abs_send_time=1000 + i), 42)
    native.flush()  # samples go to Python in batches
    markers = [i for i, p in enumerate(stream) if p[3]]
    assert [sent for sent, *_ in events.rembs] == [1000 + i for i in markers]
    assert all(arrival == 42 and ssrc == MEDIA_SSRC for _, arrival, _, ssrc in events.rembs)
    assert events.rembs[0][2] == sum(len(rtp(*p)) - 12 for p in stream[:markers[0] + 1])


def test_a_lost_picture_asks_for_a_keyframe() -> None:
    events = Events()
    native = new_stream(events)
    stream = vp8_stream(40, keyframe_every=1000)
    for packet in stream[:10] + stream[11:]:
        native.handle(rtp(*packet), 0)
    assert events.plis == [MEDIA_SSRC]
    assert native.waiting_keyframe


# ------------------------------------------------------------------ hostile input
def fuzz(rng: random.Random, seed: bytes) -> bytes:
    data = bytearray(seed[:rng.randrange(len(seed) + 1)])
    for _ in range(rng.randrange(5)):
        if data:
            data[rng.randrange(len(data))] = rng.randrange(256)
    if rng.random() < 0.2:
        data = bytearray(rng.randbytes(rng.randrange(60)))
    return bytes(data)


def test_fuzzed_rtp_never_crashes_the_stream() -> None:
    rng = random.Random(3)
    events = Events()
    native = new_stream(events)
    native.set_rtx_ssrc(RTX_SSRC, MEDIA_SSRC)
    seeds = [rtp(5, 90, True, True, b"\x10\x02" * 30, abs_send_time=7), rtp(6, 90, False, True, b"", pt=RTX)]
    for i in range(20000):
        data = fuzz(rng, seeds[i % 2])
        assert native.handle(data, i) in (True, False)
    for ts, data, _ in events.frames:
        assert isinstance(ts, int) and isinstance(data, bytes)


class Pair:
    """Two SRTP sessions with one key, as a sender's and our receiver's."""

    def __init__(self) -> None:
        key = bytes(range(30))
        self.tx = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND))
        self.rx = pylibsrtp.Session(pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND))

    def reader(self, sock: socket.socket, on_other: Any) -> Any:
        unprotect, unprotect_rtcp, ffi = native_rx._srtp_functions()
        return _rtpin.Reader(sock.fileno(), unprotect, unprotect_rtcp, int(ffi.cast("uintptr_t", self.rx._srtp[0])),
                             self.rx, on_other)


def test_fuzzed_datagrams_never_crash_the_reader() -> None:
    rng = random.Random(4)
    pair = Pair()
    others: list[Any] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        reader = pair.reader(sock, lambda items, *_: others.extend(items))
        stream = new_stream()
        reader.bind(MEDIA_SSRC, stream)
        protected = [pair.tx.protect(rtp(n, 90 * n, True, True, b"\x10" * 50)) for n in range(200)]
        rtcp = pair.tx.protect_rtcp(bytes([0x80, 200, 0, 6]) + bytes(24))
        for i in range(20000):
            seed = protected[i % len(protected)] if i % 3 else rtcp
            reader.feed(fuzz(rng, seed) if i % 5 else seed)
        for n in range(1000, 1100):  # still works after all that
            reader.feed(pair.tx.protect(rtp(n, 90 * n, True, True, b"\x10" * 50)))
    assert stream.frames_out > 50
    assert all(kind in (0, 1, 2) and isinstance(data, bytes) for kind, data, _ in others)


def test_reader_on_a_socket() -> None:
    pair = Pair()
    others: list[Any] = []
    got_other = threading.Event()
    events = Events()

    def on_other(items: list[Any], rx_bytes: int, rx_packets: int) -> None:
        others.extend(items)
        got_other.set()

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as peer:
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        peer.bind(("127.0.0.1", 0))
        peer_address = peer.getsockname()
        reader = pair.reader(sock, on_other)
        stream = new_stream(events)
        reader.bind(MEDIA_SSRC, stream)
        reader.start()
        try:
            target = sock.getsockname()
            stream_packets = vp8_stream(30)
            for packet in stream_packets:
                peer.sendto(pair.tx.protect(rtp(*packet)), target)
            stun = b"\x00\x01\x00\x00\x21\x12\xa4\x42" + bytes(12)
            peer.sendto(stun, target)
            rtcp = bytes([0x80, 200, 0, 6]) + bytes(24)
            peer.sendto(pair.tx.protect_rtcp(rtcp), target)
            opus = RtpPacket(payload_type=111, sequence_number=1, ssrc=99, payload=b"opus").serialize()
            peer.sendto(pair.tx.protect(opus), target)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (len(events.frames) < 30 or len(others) < 3):
                time.sleep(0.01)
        finally:
            reader.stop()
        assert not reader.running
    assert [(ts, data) for ts, data, _ in events.frames] == expected_frames(stream_packets)
    assert threading.get_ident() not in events.threads  # delivered on the reader's thread
    kinds = {kind: (data, addr) for kind, data, addr in others}
    assert kinds[0] == (stun, peer_address)
    assert kinds[1][0] == rtcp  # unprotected
    assert kinds[2][0] == opus  # unprotected, not taken


def test_stopping_a_reader_twice_and_dropping_it_unstarted() -> None:
    pair = Pair()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        reader = pair.reader(sock, lambda *_: None)
        reader.start()
        reader.stop()
        reader.stop()
        pair.reader(sock, lambda *_: None)  # never started: freed cleanly


def test_streams_and_readers_in_cycles_are_collected() -> None:
    import gc
    import weakref

    class Owner:  # as NativeVp8: its stream calls back into it
        def __init__(self) -> None:
            self.stream = _rtpin.Vp8Stream(self.events, [VP8], [RTX])

        def events(self, *args: Any) -> None:
            pass

    class Connection:  # as native_rx.Connection: its reader calls back into it
        def __init__(self, sock: socket.socket) -> None:
            self.reader = pair.reader(sock, self.others)

        def others(self, *args: Any) -> None:
            pass

    pair = Pair()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        owner, connection = Owner(), Connection(sock)
        connection.reader.bind(MEDIA_SSRC, owner.stream)
        owner.stream.handle(rtp(1, 90, True, True, b"\x10"), 0)
        refs = [weakref.ref(owner), weakref.ref(connection)]
        del owner, connection
        gc.collect()
        assert [ref() for ref in refs] == [None, None]


def test_deliveries_from_two_threads_stay_in_order() -> None:
    """The reader's thread and the loop (packets of an SSRC not bound yet) may deliver at
    once: frames still reach the callback one delivery at a time, in order."""
    seen: list[int] = []
    inside = threading.Lock()

    def events(frames: Any, *_: Any) -> None:
        assert inside.acquire(blocking=False)  # never two deliveries at once
        try:
            for ts, _, _ in frames or ():
                seen.append(ts)
                time.sleep(0)  # give the GIL away mid-delivery
        finally:
            inside.release()

    native = _rtpin.Vp8Stream(events, [VP8], [RTX])
    packets = [rtp(*p) for p in vp8_stream(400, per_frame=1)]
    lock = threading.Lock()
    queue = list(packets)

    def worker() -> None:
        while True:
            with lock:
                if not queue:
                    return
                data = queue.pop(0)
            native.handle(data, 0)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == sorted(seen) and len(seen) > 300  # a keyframe may jump a frame still in another thread


class FakeReceiver:
    """What NativeVp8 reads of an aiortc RTCRtpReceiver, recording the RTCP it sends."""

    def __init__(self) -> None:
        from aiortc.rate import RemoteBitrateEstimator
        from aiortc.rtcrtpparameters import RTCRtpCodecParameters
        from aiortc.rtcrtpreceiver import TimestampMapper

        d = self.__dict__
        d["_RTCRtpReceiver__codecs"] = {
            VP8: RTCRtpCodecParameters(mimeType="video/VP8", clockRate=90000, payloadType=VP8),
            RTX: RTCRtpCodecParameters(mimeType="video/rtx", clockRate=90000, payloadType=RTX,
                                       parameters={"apt": VP8})}
        d["_RTCRtpReceiver__remote_streams"] = {}
        d["_RTCRtpReceiver__active_ssrc"] = {}
        d["_RTCRtpReceiver__rtx_ssrc"] = {RTX_SSRC: MEDIA_SSRC}
        d["_RTCRtpReceiver__remote_bitrate_estimator"] = RemoteBitrateEstimator()
        d["_RTCRtpReceiver__timestamp_mapper"] = TimestampMapper()
        d["_RTCRtpReceiver__rtcp_ssrc"] = 1
        self._enabled = True
        self.sent: list[tuple[str, Any, int]] = []

    async def _send_rtcp_nack(self, ssrc: int, missing: list[int]) -> None:
        self.sent.append(("nack", (ssrc, missing), threading.get_ident()))

    async def _send_rtcp_pli(self, ssrc: int) -> None:
        self.sent.append(("pli", ssrc, threading.get_ident()))

    async def _send_rtcp(self, packet: Any) -> None:
        self.sent.append(("remb", packet, threading.get_ident()))


async def test_native_vp8_sends_its_rtcp_on_the_loop_and_frames_to_the_sink() -> None:
    import asyncio

    receiver = FakeReceiver()
    packets: list[Any] = []
    lean = native_rx.NativeVp8(receiver, lambda codec, packet: packets.append(packet) or len(packets) == 2, 3)
    stream = vp8_stream(12, keyframe_every=1000)
    lost = stream.pop(9)

    def publish() -> None:  # as the reader's thread does
        for i, packet in enumerate(stream):
            lean.stream.handle(rtp(*packet, ssrc=MEDIA_SSRC, abs_send_time=1000 * i), 10 * i)
        lean.stream.flush()

    await asyncio.to_thread(publish)
    streams = receiver.__dict__["_RTCRtpReceiver__remote_streams"]

    def settled() -> bool:  # what the stream posted to the loop has run (a loaded machine is slow)
        kinds = {kind for kind, _, _ in receiver.sent}
        return {"nack", "pli"} <= kinds and MEDIA_SSRC in streams and \
            streams[MEDIA_SSRC].packets_received == len(stream)

    for _ in range(500):
        if settled():
            break
        await asyncio.sleep(0.01)
    loop_thread = threading.get_ident()
    kinds = {kind for kind, _, _ in receiver.sent}
    assert {"nack", "pli"} <= kinds  # a hole; and the sink asked for a keyframe at its second frame
    assert all(thread == loop_thread for _, _, thread in receiver.sent)
    nack = next(value for kind, value, _ in receiver.sent if kind == "nack")
    assert nack == (MEDIA_SSRC, [lost[0]])
    assert [p.pts for p in packets] == sorted(p.pts for p in packets) and packets[0].pts == 0
    assert packets[0].is_keyframe and not packets[1].is_keyframe
    stats = receiver.__dict__["_RTCRtpReceiver__remote_streams"][MEDIA_SSRC]
    assert stats.packets_received == len(stream) and stats.fraction_lost >= 0 and stats.packets_lost == 1
    assert MEDIA_SSRC in receiver.__dict__["_RTCRtpReceiver__active_ssrc"]


async def test_a_later_statistics_batch_posted_before_the_first_made_the_entry_is_kept() -> None:
    """Two batches for a new SSRC can be posted to the loop before it runs the first (a busy
    loop): the entry ends with the newer counts, not the first batch's."""
    import asyncio

    receiver = FakeReceiver()
    lean = native_rx.NativeVp8(receiver, lambda codec, packet: False, 3)
    streams = receiver.__dict__["_RTCRtpReceiver__remote_streams"]
    first = (MEDIA_SSRC, 1, 100, 100, 0, 0, 5, 1000, False)
    later = (MEDIA_SSRC, 40, 100, 139, 0, 16, 900, 4000, True)

    def reader() -> None:  # the reader's thread: both posted before the loop runs either
        lean._stats([first])
        lean._stats([later])

    thread = threading.Thread(target=reader)
    thread.start()
    thread.join()  # the loop has not run since: neither post has been handled
    assert MEDIA_SSRC not in streams
    for _ in range(50):
        if MEDIA_SSRC in streams and streams[MEDIA_SSRC].packets_received == 40:
            break
        await asyncio.sleep(0.01)
    assert streams[MEDIA_SSRC].packets_received == 40 and streams[MEDIA_SSRC].max_seq == 139
    lean._new_stats(first)  # an older batch arriving late changes nothing
    assert streams[MEDIA_SSRC].packets_received == 40
