"""Encoders and the running composition: what comes out decodes to what went in, equal
encodings share one encoder, and slow consumers or encoders never hold the compositor up."""

from __future__ import annotations

import itertools
import threading
import time
from fractions import Fraction

import av
import numpy as np
import pytest
from pydantic import ValidationError

from gateway.media.bus import FrameBus
from gateway.media.clock import RoomClock
from gateway.media.composition import Composition
from gateway.media.compositor import Compositor
from gateway.media.encoder import AudioEncoder, Encoding, VideoEncoder
from gateway.media.layout.model import Canvas
from gateway.media.layout.placed import PlacedRegion
from tests.media.fakes import ToneMix

RED, BLUE = (220, 30, 30), (40, 50, 220)


def solid(rgb: tuple[int, int, int], w: int, h: int) -> av.VideoFrame:
    return av.VideoFrame.from_ndarray(np.full((h, w, 3), rgb, np.uint8), format="rgb24").reformat(
        format="yuv420p")


def tone_440(start: int, n: int) -> np.ndarray:
    return tone(start, n, 440)


def tone(start: int, n: int, hz: float, amplitude: float = 0.3) -> np.ndarray:
    t = (start + np.arange(n)) / 48000
    mono = (amplitude * 32767 * np.sin(2 * np.pi * hz * t)).astype(np.int16)
    return np.stack([mono, mono], axis=1)


def decode(info_name: str, extradata: bytes | None, packets: list[av.Packet], **attrs: object) -> list:
    ctx = av.CodecContext.create(info_name, "r")
    if extradata:
        ctx.extradata = extradata
    for name, value in attrs.items():
        setattr(ctx, name, value)
    frames = []
    for packet in packets:
        frames += ctx.decode(packet)
    return frames + ctx.decode(None)


def left(frame: av.AudioFrame) -> np.ndarray:
    """The first channel of a decoded frame, packed or planar."""
    data = frame.to_ndarray()
    return data.reshape(-1, len(frame.layout.channels))[:, 0] if frame.format.is_packed else data[0]


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


# ---------------------------------------------------------------------------- Encoding
def test_encoding_defaults_validation_and_key() -> None:
    enc = Encoding()
    assert (enc.width, enc.height, enc.fps, enc.video_kbps, enc.gop_s, enc.codec) == (1280, 720, 30, 1500, 2, "h264")
    assert (enc.audio_kbps, enc.sample_rate, enc.channels, enc.audio_codec, enc.preset) == (
        128, 48000, 2, "aac", "veryfast")
    assert Encoding(width=1280).key() == enc.key() and hash(Encoding()) == hash(enc)
    assert Encoding(video_kbps=2000).key() != enc.key()
    assert Encoding(video_kbps=2000).audio_key() == enc.audio_key()
    assert Encoding(width=641, height=361).width == 640
    with pytest.raises(ValidationError):
        Encoding(bitrate=5)  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        Encoding(audio_codec="opus", sample_rate=44100)
    assert Encoding.model_validate({"width": 640, "height": 360, "fps": 25}).gop_frames == 50


# ---------------------------------------------------------------------------- video
def test_video_encoder_gop_headers_and_timestamps() -> None:
    encoder = VideoEncoder(Encoding(width=320, height=240, fps=30, gop_s=1, video_kbps=300), threads=1)
    info = encoder.codec_info
    assert (info.name, info.width, info.height, info.time_base) == ("h264", 320, 240, Fraction(1, 90000))
    assert info.extradata  # global header: SPS/PPS for MP4 and FLV
    packets = []
    for i in range(75):
        frame = solid(RED, 320, 240)
        frame.pts, frame.time_base = 45000 + i * 3000, Fraction(1, 90000)
        packets += encoder.encode(frame)
        assert frame.pts == 45000 + i * 3000  # the shared frame is not touched
    packets += encoder.flush()
    assert len(packets) == 75
    assert [p.pts for p in packets if p.is_keyframe] == [45000, 45000 + 30 * 3000, 45000 + 60 * 3000]
    assert all(p.dts == p.pts for p in packets)  # no B-frames
    assert [p.pts for p in packets] == sorted(p.pts for p in packets)


def test_video_encoder_scales_and_keeps_colour() -> None:
    encoder = VideoEncoder(Encoding(width=320, height=180, fps=30), threads=1)
    packets = []
    for i in range(3):
        frame = solid(BLUE, 640, 360)  # not the encoding's size
        frame.pts, frame.time_base = i * 3000, Fraction(1, 90000)
        packets += encoder.encode(frame)
    packets += encoder.flush()
    frames = decode("h264", encoder.codec_info.extradata, packets)
    assert [(f.width, f.height) for f in frames] == [(320, 180)] * 3
    pixel = frames[-1].to_ndarray(format="rgb24")[90, 160].astype(int)
    assert np.all(np.abs(pixel - BLUE) <= 10)


def test_video_encoder_drops_non_increasing_timestamps() -> None:
    encoder = VideoEncoder(Encoding(width=160, height=90), threads=1)
    for pts in (3000, 3000, 1500, 6000):
        frame = solid(RED, 160, 90)
        frame.pts, frame.time_base = pts, Fraction(1, 90000)
        encoder.encode(frame)
    assert encoder.frames_dropped == 2
    assert len(encoder.flush()) == 0  # zerolatency: nothing held back


# ---------------------------------------------------------------------------- audio
@pytest.mark.parametrize(("codec", "frame_size"), [("aac", 1024), ("opus", 960)])
def test_audio_encoder_rechunks_keeps_pts_and_tone(codec: str, frame_size: int) -> None:
    encoder = AudioEncoder(Encoding(audio_codec=codec, audio_kbps=96))
    assert encoder.frame_size == frame_size
    start = 48000 * 7  # the mixer's clock is not at zero
    packets = []
    for block in range(100):  # 2 s of 20 ms blocks
        pts = start + block * 960
        packets += encoder.encode(tone(pts, 960, 1000), pts)
    packets += encoder.flush()
    info = encoder.codec_info
    assert info.name == codec and info.sample_rate == 48000 and info.channels == 2 and info.extradata
    steps = {b.pts - a.pts for a, b in itertools.pairwise(packets)}
    assert steps == {frame_size}  # continuous
    assert abs(packets[0].pts - start) <= 1024  # encoder priming shifts the first packet back
    frames = decode("aac" if codec == "aac" else "libopus", info.extradata, packets)
    pcm = np.concatenate([left(f) for f in frames])
    assert abs(peak_hz(pcm[4800:4800 + 48000].astype(np.float64), 48000) - 1000) < 5


def test_audio_encoder_fills_gaps_and_resamples() -> None:
    encoder = AudioEncoder(Encoding(sample_rate=44100, channels=1))
    packets = []
    for block in range(50):
        pts = block * 960 + (9600 if block >= 25 else 0)  # 200 ms lost in the mixer
        packets += encoder.encode(tone(pts, 960, 440), pts)
    packets += encoder.flush()
    assert encoder.gaps_filled == 1
    assert encoder.codec_info.sample_rate == 44100 and encoder.codec_info.channels == 1
    # 1 s of audio + 0.2 s of silence fill, at 44.1 kHz, in 1024-sample frames
    total = packets[-1].pts + 1024 - packets[0].pts
    assert abs(total - round(1.2 * 44100)) <= 3 * 1024


# ---------------------------------------------------------------------------- composition
@pytest.fixture
def room() -> tuple[FrameBus, Canvas, Compositor]:
    bus = FrameBus()
    canvas = Canvas(width=320, height=180, fps=30)
    compositor = Compositor(canvas, bus)
    compositor.set_regions([PlacedRegion(x=0, y=0, w=320, h=180, participant_id="p1")])
    return bus, canvas, compositor


def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_equal_encodings_share_encoders(room: tuple[FrameBus, Canvas, Compositor]) -> None:
    bus, canvas, compositor = room
    composition = Composition(canvas, compositor, bus.clock, audio=ToneMix(bus.clock, tone_440))
    first = composition.attach(Encoding(width=320, height=180, video_kbps=300))
    second = composition.attach(Encoding(width=320, height=180, video_kbps=300))
    other = composition.attach(Encoding(width=160, height=90, video_kbps=200))
    try:
        assert first.video_track is second.video_track and first.audio_track is second.audio_track
        assert other.video_track is not first.video_track
        assert other.audio_track is first.audio_track  # same audio settings: one AAC encoder
        assert len(composition.stats()["encoders"]) == 2
        composition.detach(first)
        composition.detach(first)  # twice is harmless
        assert not second.video_track.closed  # still used by `second`
        composition.detach(second)
        assert second.video_track.closed and not other.video_track.closed
        assert not other.audio_track.closed
    finally:
        composition.stop()
    assert other.video_track.closed and other.audio_track.closed


def test_composition_encodes_on_the_room_clock(room: tuple[FrameBus, Canvas, Compositor]) -> None:
    bus, canvas, compositor = room
    composition = Composition(canvas, compositor, bus.clock, audio=ToneMix(bus.clock, tone_440))
    output = composition.attach(Encoding(width=320, height=180, video_kbps=300))
    video, audio = output.video_track.subscribe_packets(), output.audio_track.subscribe_packets()
    track = bus.create_track("video", "camera", "p1")
    compositor.render()  # subscribe before publishing
    track.push_frame(solid(RED, 320, 180))
    composition.start()
    packets: list[av.Packet] = []
    try:
        while len(packets) < 20:
            packet = video.get(timeout=10)
            assert packet is not None
            packets.append(packet)
        first_audio = audio.get(timeout=10)
    finally:
        composition.stop()
    assert packets[0].is_keyframe
    gaps = [b.pts - a.pts for a, b in itertools.pairwise(packets)]
    assert all(gap > 0 and gap % 3000 == 0 for gap in gaps)  # on the 30 fps deadline grid
    # both streams are on the room clock: their timestamps are close to each other
    assert first_audio is not None
    assert abs(float(packets[0].pts * packets[0].time_base - first_audio.pts * first_audio.time_base)) < 2
    frame = decode("h264", output.video_track.codec.extradata, packets)[-1]
    assert np.all(np.abs(frame.to_ndarray(format="rgb24")[90, 160].astype(int) - RED) <= 10)
    stats = composition.stats()
    assert stats["frames_rendered"] >= 20 and stats["render_seconds"] > 0
    while video.get(timeout=5) is not None:
        pass  # drained up to the end marker: stopping ended the track


def test_slow_packet_consumer_does_not_stall(room: tuple[FrameBus, Canvas, Compositor]) -> None:
    bus, canvas, compositor = room
    composition = Composition(canvas, compositor, bus.clock)
    output = composition.attach(Encoding(width=320, height=180, video_kbps=300))
    stuck = output.video_track.subscribe_packets(maxsize=3)  # never read
    live = output.video_track.subscribe_packets()
    composition.start()
    try:
        received = 0
        while received < 30:
            assert live.get(timeout=10) is not None
            received += 1
    finally:
        composition.stop()
    assert stuck.dropped > 0
    assert composition.frames_rendered >= 30


def test_slow_encoder_drops_frames_instead_of_delaying_the_compositor(
        room: tuple[FrameBus, Canvas, Compositor], monkeypatch: pytest.MonkeyPatch) -> None:
    bus, canvas, compositor = room
    release = threading.Event()
    original = VideoEncoder.encode

    def stuck_encode(self: VideoEncoder, frame: av.VideoFrame) -> list[av.Packet]:
        release.wait(30)  # an encoder that cannot keep up at all
        return original(self, frame)

    monkeypatch.setattr(VideoEncoder, "encode", stuck_encode)
    composition = Composition(canvas, compositor, bus.clock)
    output = composition.attach(Encoding(width=320, height=180, video_kbps=300))
    composition.start()
    try:
        wait_for(lambda: composition.frames_rendered >= 20)
        stats = composition.stats()["encoders"][0]
        assert stats["frames_encoded"] == 0 and stats["frames_dropped"] >= 15
    finally:
        release.set()
        composition.stop()
    assert output.video_track.closed


def test_slow_compositor_skips_missed_deadlines(
        room: tuple[FrameBus, Canvas, Compositor], monkeypatch: pytest.MonkeyPatch) -> None:
    bus, canvas, compositor = room
    original = compositor.render

    def slow_render(now: float | None = None) -> av.VideoFrame:
        time.sleep(0.1)  # three frame periods at 30 fps
        return original(now)

    monkeypatch.setattr(compositor, "render", slow_render)
    composition = Composition(canvas, compositor, bus.clock)
    output = composition.attach(Encoding(width=320, height=180, video_kbps=300))
    packets = output.video_track.subscribe_packets()
    composition.start()
    try:
        received = [packets.get(timeout=10) for _ in range(4)]
    finally:
        composition.stop()
    # each late frame skips the deadlines that passed meanwhile, rather than piling up
    assert composition.frames_skipped >= 2 * (composition.frames_rendered - 1)
    gaps = [b.pts - a.pts for a, b in itertools.pairwise(received)]
    assert all(gap >= 9000 and gap % 3000 == 0 for gap in gaps)  # still on the 30 fps grid


def test_an_encoding_slower_than_the_canvas_gets_its_own_fps(room: tuple[FrameBus, Canvas, Compositor]) -> None:
    """A 15 fps output of a 30 fps canvas encodes every other frame, 1/15 s apart."""
    bus, canvas, compositor = room
    composition = Composition(Canvas(width=canvas.width, height=canvas.height, fps=30), compositor, bus.clock)
    slow = composition.attach(Encoding(width=320, height=180, video_kbps=300, fps=15))
    full = composition.attach(Encoding(width=320, height=180, video_kbps=300, fps=30))
    slow_packets, full_packets = slow.video_track.subscribe_packets(), full.video_track.subscribe_packets()
    composition.start()
    try:
        stamps = [slow_packets.get(timeout=10).pts for _ in range(16)]
        full_stamps = [full_packets.get(timeout=10).pts for _ in range(16)]
        stats = {e["encoding"]["fps"]: e for e in composition.stats()["encoders"]}
    finally:
        composition.stop()
    steps = [b - a for a, b in itertools.pairwise(stamps)]
    # 1/15 s apart; a canvas frame skipped on a loaded machine moves one frame by 1/30 s
    assert min(steps) >= 3000 and sorted(steps)[len(steps) // 2] == 6000, steps
    assert 3000 in {b - a for a, b in itertools.pairwise(full_stamps)}
    assert stats[15]["frames_decimated"] >= 15 and stats[30]["frames_decimated"] == 0


@pytest.mark.parametrize("fps", [7, 25, 30])
def test_an_encoding_at_the_canvas_fps_takes_every_frame(fps: int) -> None:
    """Frame times rounded to 1/90000 (7 fps does not divide it) never fall in one slot."""
    from gateway.media.composition import _VideoPipeline

    pipeline = _VideoPipeline(Encoding(width=64, height=64, video_kbps=100, fps=fps), RoomClock(), 1)
    for index in range(50):
        frame = av.VideoFrame(64, 64, "yuv420p")
        frame.pts = 123457 + round(index * 90000 / fps)
        pipeline.offer(frame)
    assert pipeline.frames_decimated == 0
    pipeline.stop()
