"""Tracks: normalisation, fan-out without stalls, lazy decoding, and hostile packets."""

from __future__ import annotations

import os
import time
from fractions import Fraction

import av
import numpy as np
import pytest

from gateway.media.audio import frame_to_samples
from gateway.media.bus import FrameBus
from gateway.media.clock import RoomClock
from gateway.media.jitter import AudioJitterBuffer
from gateway.media.track import CodecInfo, Track, TrackKind, TrackSource


def rgb_frame(rgb: tuple[int, int, int], w: int = 64, h: int = 48) -> av.VideoFrame:
    arr = np.empty((h, w, 3), dtype=np.uint8)
    arr[:] = rgb
    return av.VideoFrame.from_ndarray(arr, format="rgb24")


def encode_h264(colours: list[tuple[int, int, int]]) -> tuple[CodecInfo, list[av.Packet]]:
    enc = av.CodecContext.create("libx264", "w")
    enc.width, enc.height, enc.pix_fmt = 64, 48, "yuv420p"
    enc.time_base = Fraction(1, 30)
    enc.options = {"preset": "ultrafast", "tune": "zerolatency"}
    enc.flags |= av.codec.context.Flags.global_header
    packets: list[av.Packet] = []
    for index, colour in enumerate(colours):
        frame = rgb_frame(colour).reformat(format="yuv420p")
        frame.pts = index
        packets += enc.encode(frame)
    packets += enc.encode(None)
    info = CodecInfo("h264", Fraction(1, 30), width=64, height=48, extradata=enc.extradata)
    return info, packets


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_video_frames_are_normalised_to_yuv420p_and_fanned_out() -> None:
    track = Track(TrackKind.VIDEO, TrackSource.CAMERA, "p1", RoomClock())
    first, second = track.subscribe_video(), track.subscribe_video()
    track.push_frame(rgb_frame((255, 0, 0)))
    for sub in (first, second):
        frame, seq = sub.latest()
        assert frame is not None and frame.format.name == "yuv420p" and seq > 0
        assert np.abs(frame.to_ndarray(format="rgb24")[10, 10].astype(int) - [255, 0, 0]).max() < 8


def test_latest_frame_only_no_backlog() -> None:
    track = Track(TrackKind.VIDEO, TrackSource.CAMERA, "p1", RoomClock())
    sub = track.subscribe_video()
    for value in range(50):
        track.push_frame(rgb_frame((value, value, value)))
    frame, _ = sub.latest()
    assert frame is not None
    assert abs(int(frame.to_ndarray(format="rgb24")[5, 5, 0]) - 49) <= 3
    assert sub.received == 50


def test_a_new_video_subscriber_starts_from_the_current_picture() -> None:
    clock = RoomClock()
    track = Track(TrackKind.VIDEO, TrackSource.CAMERA, "p1", clock)
    assert track.subscribe_video().latest() == (None, 0)  # nothing published yet
    track.push_frame(rgb_frame((0, 0, 255)))
    late = track.subscribe_video()
    frame, seq = late.latest()
    assert frame is not None and seq > 0 and late.received == 0  # primed, not counted as received
    assert np.abs(frame.to_ndarray(format="rgb24")[10, 10].astype(int) - [0, 0, 255]).max() < 8
    clock.epoch -= 2  # two seconds pass without a new frame: the old one is stale
    assert track.subscribe_video().latest() == (None, 0)
    track.push_frame(rgb_frame((0, 255, 0)))
    track.muted = True  # a muted track's picture is not handed out
    assert track.subscribe_video().latest() == (None, 0)


def test_audio_is_resampled_to_48k_stereo() -> None:
    track = Track(TrackKind.AUDIO, TrackSource.MIC, "p1", RoomClock())
    sub = track.subscribe_audio(target_ms=20)
    t = np.arange(1600) / 16000
    mono = (np.sin(2 * np.pi * 1000 * t) * 10000).astype(np.int16).reshape(1, -1)
    frame = av.AudioFrame.from_ndarray(mono, format="s16", layout="mono")
    frame.sample_rate = 16000
    frame.pts, frame.time_base = 0, Fraction(1, 16000)
    track.push_frame(frame)
    track.push_frame(frame)
    assert sub.queued > 4000  # 100 ms at 16 kHz became ~4800 samples at 48 kHz (minus resampler delay)
    block = sub.pull(960)
    assert block is not None and block.shape == (960, 2)
    spectrum = np.abs(np.fft.rfft(sub.pull(2400)[:, 0].astype(float)))
    assert abs(np.argmax(spectrum) * 48000 / 2400 - 1000) <= 20


def test_packets_pass_through_untouched_and_decode_only_when_needed() -> None:
    info, packets = encode_h264([(0, 0, 255)] * 10)
    track = Track(TrackKind.VIDEO, TrackSource.CAMERA, "p1", RoomClock(), codec=info)
    passthrough = track.subscribe_packets()
    for packet in packets:
        track.push_packet(packet)
    assert track._decoder is None  # nobody needs pixels: no decoder thread at all
    got = [passthrough.get(timeout=1) for _ in packets]
    assert [bytes(p) for p in got] == [bytes(p) for p in packets]

    video = track.subscribe_video()
    for packet in packets:
        track.push_packet(packet)
    wait_for(lambda: video.latest()[0] is not None)
    frame = video.latest()[0]
    assert np.abs(frame.to_ndarray(format="rgb24")[20, 20].astype(int) - [0, 0, 255]).max() < 10
    track.close()


def test_hostile_packets_are_counted_and_decoding_recovers() -> None:
    info, packets = encode_h264([(0, 255, 0)] * 10)
    track = Track(TrackKind.VIDEO, TrackSource.CAMERA, "p1", RoomClock(), codec=info)
    video = track.subscribe_video()
    for _ in range(20):
        track.push_packet(av.Packet(os.urandom(200)))
    track.push_packet(av.Packet(b""))
    for packet in packets:
        track.push_packet(packet)
    wait_for(lambda: video.latest()[0] is not None)
    assert track._decoder is not None and track._decoder.is_alive()
    frame = video.latest()[0]
    assert np.abs(frame.to_ndarray(format="rgb24")[20, 20].astype(int) - [0, 255, 0]).max() < 10
    track.close()


def test_a_full_packet_queue_drops_to_the_next_keyframe_without_blocking() -> None:
    info, packets = encode_h264([(9, 9, 9)] * 60)
    track = Track(TrackKind.VIDEO, TrackSource.CAMERA, "p1", RoomClock(), codec=info)
    slow = track.subscribe_packets(maxsize=5)
    fast = track.subscribe_packets(maxsize=1000)
    for packet in packets:
        track.push_packet(packet)  # never blocks although `slow` is never read
    assert slow.dropped > 0
    assert [fast.get(timeout=1) is not None for _ in packets] == [True] * len(packets)


def test_jitter_buffer_primes_conceals_and_bounds_latency() -> None:
    buf = AudioJitterBuffer(target_ms=60, max_ms=200)
    block = np.ones((960, 2), dtype=np.int16)
    buf.push(block)
    buf.push(block)
    assert buf.pull() is None  # 40 ms < 60 ms target: still priming
    buf.push(block)
    assert buf.pull() is not None
    buf.pull()
    buf.pull()
    assert buf.pull() is None and buf.underruns == 1  # empty: silence, counted
    for _ in range(30):
        buf.push(block)
    assert buf.queued <= 48000 * 200 // 1000  # never more than max_ms queued
    assert buf.dropped_samples > 0


def test_bus_listeners_and_find() -> None:
    bus = FrameBus()
    seen: list[tuple[str, str]] = []
    bus.listen(lambda what, track: seen.append((what, track.source.value)))
    camera = bus.create_track(TrackKind.VIDEO, TrackSource.CAMERA, "p1")
    screen = bus.create_track(TrackKind.VIDEO, TrackSource.SCREEN, "p1")
    assert bus.find("p1", TrackKind.VIDEO) is camera
    assert bus.find("p1", TrackKind.VIDEO, TrackSource.SCREEN) is screen
    bus.remove_track(screen.track_id)
    assert bus.find("p1", TrackKind.VIDEO, TrackSource.SCREEN) is None
    assert seen == [("added", "camera"), ("added", "screen"), ("removed", "screen")]


def test_audio_frame_helpers_round_trip() -> None:
    samples = (np.arange(1920, dtype=np.int16) - 960).reshape(960, 2)
    from gateway.media.audio import samples_to_frame

    frame = samples_to_frame(samples, pts=4800)
    assert frame.sample_rate == 48000 and frame.pts == 4800
    assert np.array_equal(frame_to_samples(frame), samples)


@pytest.mark.parametrize("kind", [TrackKind.AUDIO, TrackKind.VIDEO])
def test_subscribing_to_the_wrong_kind_is_an_error(kind: TrackKind) -> None:
    track = Track(kind, TrackSource.CAMERA if kind is TrackKind.VIDEO else TrackSource.MIC, "p", RoomClock())
    with pytest.raises(ValueError):
        (track.subscribe_audio if kind is TrackKind.VIDEO else track.subscribe_video)()
