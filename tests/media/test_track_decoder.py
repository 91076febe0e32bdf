"""The track's lazy decoder: single-threaded by default, and a subscriber that arrives in the
middle of a GOP gets the current picture at the next packet (caught up from the keyframe),
not after the next keyframe."""

from __future__ import annotations

import time
from fractions import Fraction

import av
import numpy as np

from gateway.media.clock import RoomClock
from gateway.media.track import CodecInfo, DecoderSettings, Track

GOP = 30


def encoded_packets(count: int = 40) -> tuple[CodecInfo, list[av.Packet]]:
    """H.264 of a picture whose brightness grows each frame (frame n has luma ~ 16 + 4n)."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 64, 64, "yuv420p"
    ctx.time_base = Fraction(1, 30)
    ctx.gop_size = GOP
    ctx.max_b_frames = 0
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency", "sc_threshold": "0", "flags": "+global_header"}
    packets = []
    for index in range(count):
        planes = [np.full((64, 64), 16 + 4 * index, np.uint8), np.full((32, 32), 128, np.uint8),
                  np.full((32, 32), 128, np.uint8)]
        frame = av.VideoFrame(64, 64, "yuv420p")
        for plane, data in zip(frame.planes, planes, strict=True):
            np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)[:, :plane.width] = data
        frame.pts = index
        packets += ctx.encode(frame)
    packets += ctx.encode(None)
    for packet in packets:
        packet.time_base = Fraction(1, 30)
    info = CodecInfo(name="h264", time_base=Fraction(1, 30), width=64, height=64, extradata=ctx.extradata)
    return info, packets


def wait_for(check, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.005)
    return False


def test_a_late_subscriber_sees_the_current_picture_at_once() -> None:
    info, packets = encoded_packets()
    track = Track("video", "camera", "p", RoomClock(), codec=info)
    try:
        for packet in packets[:12]:  # nobody needs pixels yet: nothing is decoded
            track.push_packet(packet)
        assert track._decoder is None
        sub = track.subscribe_video()
        track.push_packet(packets[12])
        assert wait_for(lambda: sub.received >= 1)
        frame, _ = sub.latest()
        luma = float(frame.to_ndarray()[:64].mean())
        assert abs(luma - (16 + 4 * 12)) < 6, luma  # frame 12, not a stale or broken one
        assert sub.received == 1  # the catch-up frames were decoded but not shown
        assert track._decoder is not None and track._decoder.ctx.thread_count == DecoderSettings.threads == 1
    finally:
        track.close()


def test_a_subscriber_returning_mid_gop_catches_up_again() -> None:
    info, packets = encoded_packets()
    track = Track("video", "camera", "p", RoomClock(), codec=info)
    try:
        sub = track.subscribe_video()
        for packet in packets[:5]:
            track.push_packet(packet)
        assert wait_for(lambda: sub.received == 5)
        track.unsubscribe(sub)
        for packet in packets[5:20]:
            track.push_packet(packet)
        back = track.subscribe_video()
        track.push_packet(packets[20])
        assert wait_for(lambda: back.received >= 1)
        luma = float(back.latest()[0].to_ndarray()[:64].mean())
        assert abs(luma - (16 + 4 * 20)) < 6, luma
        assert track.decode_errors == 0
    finally:
        track.close()
