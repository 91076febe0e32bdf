"""Fragmented MP4 recording, verified by content: ffprobe (the Debian CLI, a different FFmpeg
than PyAV's) reads both streams and the duration; decoding shows the colours where the
layout put them and the spectrum holds the tones that were fed."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from gateway.media.audio import samples_to_frame
from gateway.media.bus import FrameBus
from gateway.media.clock import RoomClock
from gateway.media.composition import Composition, EncodedOutput
from gateway.media.compositor import Compositor
from gateway.media.encoder import AudioEncoder, Encoding, VideoEncoder, new_output_track
from gateway.media.layout.model import AudioSelection, Canvas
from gateway.media.layout.placed import PlacedRegion
from gateway.media.mixer import AudioMixer
from gateway.media.mp4 import Fmp4Writer, RecordingSink
from gateway.media.track import CodecInfo, TrackKind
from tests.media.fakes import ToneMix

RED, BLUE = (220, 30, 30), (40, 50, 220)
FFPROBE = shutil.which("ffprobe")  # installed by the test command (Debian ffmpeg); never skipped
ENC = Encoding(width=320, height=180, fps=30, gop_s=1, video_kbps=400, audio_kbps=96)


def halves(w: int = 320, h: int = 180) -> av.VideoFrame:
    image = np.empty((h, w, 3), np.uint8)
    image[:, : w // 2] = RED
    image[:, w // 2:] = BLUE
    return av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")


def stereo_tone(start: int, n: int, left_hz: float = 440, right_hz: float = 1000) -> np.ndarray:
    t = (start + np.arange(n)) / 48000
    return np.stack([0.3 * 32767 * np.sin(2 * np.pi * left_hz * t),
                     0.3 * 32767 * np.sin(2 * np.pi * right_hz * t)], axis=1).astype(np.int16)


def peak_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum))])


def wait_for_video_packets(sink: RecordingSink, count: int, timeout: float = 30) -> None:
    """Let a running recording collect `count` video packets (bounded, never a timing assertion)."""
    deadline = time.monotonic() + timeout
    while sink.writer.packets["video"] < count and time.monotonic() < deadline:
        time.sleep(0.05)


def probe(path: Path) -> dict:
    assert FFPROBE is not None
    out = subprocess.run([FFPROBE, "-v", "error", "-show_format", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True, timeout=30)
    return json.loads(out.stdout)


def decode_video(path: Path) -> list[av.VideoFrame]:
    with av.open(str(path)) as container:
        return list(container.decode(video=0))


def decode_file(path: Path) -> tuple[list[av.VideoFrame], np.ndarray, int]:
    """Video frames and the audio as (n, channels) float samples, and the sample rate."""
    frames = decode_video(path)
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="fltp", layout="stereo", rate=48000)
        chunks = []
        for frame in container.decode(audio=0):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
    audio = np.concatenate(chunks, axis=1).T if chunks else np.zeros((0, 2))
    return frames, audio, 48000


def check_content(frames: list[av.VideoFrame], audio: np.ndarray, rate: int,
                  left: tuple[int, int], right: tuple[int, int]) -> None:
    image = frames[len(frames) // 2].to_ndarray(format="rgb24").astype(int)
    assert np.all(np.abs(image[left[1], left[0]] - RED) <= 10)
    assert np.all(np.abs(image[right[1], right[0]] - BLUE) <= 10)
    second = audio[rate // 4: rate // 4 + rate // 2]
    assert abs(peak_hz(second[:, 0], rate) - 440) < 5
    assert abs(peak_hz(second[:, 1], rate) - 1000) < 5


def encode_clip(writer: Fmp4Writer | None, video: VideoEncoder, audio: AudioEncoder, seconds: float,
                skip_first_video: int = 0) -> list[tuple[str, av.Packet]]:
    """`seconds` of the two-colour picture and a stereo tone, video starting 0.5 s after the
    audio, on a room clock that is not at zero."""
    packets: list[tuple[str, av.Packet]] = []
    for block in range(int(seconds * 50)):
        pts = 48000 * 10 + block * 960
        packets += [("audio", p) for p in audio.encode(stereo_tone(pts, 960), pts)]
    for index in range(int((seconds - 0.5) * 30)):
        frame = halves()
        frame.pts, frame.time_base = 90000 * 10 + 45000 + index * 3000, Fraction(1, 90000)
        encoded = video.encode(frame)
        if index >= skip_first_video:
            packets += [("video", p) for p in encoded]
    packets.sort(key=lambda item: item[1].pts * item[1].time_base)
    if writer is not None:
        for kind, packet in packets:
            writer.write(packet, kind)
    return packets


def test_fmp4_has_both_streams_colours_and_tones(tmp_path: Path) -> None:
    video, audio = VideoEncoder(ENC, threads=1), AudioEncoder(ENC)
    path = tmp_path / "clip.mp4"
    writer = Fmp4Writer(path, video.codec_info, audio.codec_info)
    # the first video keyframe is lost: the file must start at the next one (1 s GOP)
    encode_clip(writer, video, audio, seconds=3.5, skip_first_video=1)
    stats = writer.close()
    assert stats.video_packets == 60  # 90 frames, the first GOP of 30 dropped
    assert abs(stats.duration_s - 2.0) < 0.05
    assert stats.bytes == path.stat().st_size > 0

    info = probe(path)
    kinds = {s["codec_type"]: s for s in info["streams"]}
    assert kinds["video"]["codec_name"] == "h264" and kinds["audio"]["codec_name"] == "aac"
    assert (kinds["video"]["width"], kinds["video"]["height"]) == (320, 180)
    assert kinds["audio"]["sample_rate"] == "48000" and kinds["audio"]["channels"] == 2
    data = path.read_bytes()
    assert data.count(b"moof") == 2 and data.index(b"moov") < data.index(b"moof")  # one fragment per GOP
    assert abs(float(info["format"]["duration"]) - 2.0) < 0.1

    frames, samples, rate = decode_file(path)
    assert len(frames) == 60
    assert frames[0].pts == 0 or frames[0].time == pytest.approx(0, abs=0.05)
    assert abs(len(samples) / rate - 2.0) < 0.1
    check_content(frames, samples, rate, left=(80, 90), right=(240, 90))


def test_crash_leaves_a_playable_file(tmp_path: Path) -> None:
    video, audio = VideoEncoder(ENC, threads=1), AudioEncoder(ENC)
    path = tmp_path / "live.mp4"
    writer = Fmp4Writer(path, video.codec_info, audio.codec_info)
    encode_clip(writer, video, audio, seconds=3.5)
    snapshot = tmp_path / "crashed.mp4"
    shutil.copy(path, snapshot)  # what a crash would leave: never closed
    duration = float(probe(snapshot)["format"]["duration"])
    assert duration >= 1.9  # every finished 1 s fragment is on disk
    writer.close()


def test_opus_and_single_stream_files(tmp_path: Path) -> None:
    opus = Encoding(width=320, height=180, gop_s=1, audio_codec="opus")
    video, audio = VideoEncoder(opus, threads=1), AudioEncoder(opus)
    packets = encode_clip(None, video, audio, seconds=2.5)
    for name, kinds in (("both", {"video", "audio"}), ("video", {"video"}), ("audio", {"audio"})):
        path = tmp_path / f"{name}.mp4"
        writer = Fmp4Writer(path, video.codec_info if "video" in kinds else None,
                            audio.codec_info if "audio" in kinds else None)
        for kind, packet in packets:
            writer.write(packet, kind)
        stats = writer.close()
        streams = {s["codec_type"]: s["codec_name"] for s in probe(path)["streams"]}
        assert streams == {"video": "h264", "audio": "opus"} if name == "both" else streams.keys() == kinds
        assert stats.duration_s > 1.5
        if name == "both":
            frames, samples, rate = decode_file(path)
            check_content(frames, samples, rate, left=(80, 90), right=(240, 90))
    with pytest.raises(ValueError):
        Fmp4Writer(tmp_path / "none.mp4", None, None)


def test_video_with_in_band_parameter_sets(tmp_path: Path) -> None:
    """H.264 without extradata (SPS/PPS in the keyframes, as WebRTC sends it)."""
    ctx = av.CodecContext.create("libx264", "w")
    ctx.width, ctx.height, ctx.pix_fmt = 320, 180, "yuv420p"
    ctx.time_base, ctx.framerate, ctx.gop_size = Fraction(1, 90000), Fraction(30), 30
    ctx.options = {"preset": "ultrafast", "tune": "zerolatency"}
    ctx.open()
    assert not ctx.extradata
    info = CodecInfo(name="h264", time_base=Fraction(1, 90000), width=320, height=180)
    path = tmp_path / "annexb.mp4"
    writer = Fmp4Writer(path, info, None)
    for index in range(45):
        frame = halves()
        frame.pts, frame.time_base = index * 3000, Fraction(1, 90000)
        for packet in ctx.encode(frame):
            writer.write(packet, "video")
    stats = writer.close()
    assert stats.video_packets == 45 and abs(stats.duration_s - 1.5) < 0.05
    assert abs(float(probe(path)["format"]["duration"]) - 1.5) < 0.1
    image = decode_video(path)[-1].to_ndarray(format="rgb24").astype(int)
    assert np.all(np.abs(image[90, 80] - RED) <= 10) and np.all(np.abs(image[90, 240] - BLUE) <= 10)


def test_writer_does_not_touch_shared_packets(tmp_path: Path) -> None:
    video, audio = VideoEncoder(ENC, threads=1), AudioEncoder(ENC)
    packets = encode_clip(None, video, audio, seconds=1.5)
    before = [(p.pts, p.dts, p.time_base) for _, p in packets]
    writer = Fmp4Writer(tmp_path / "x.mp4", video.codec_info, audio.codec_info)
    for kind, packet in packets:
        writer.write(packet, kind)
    writer.close()
    assert [(p.pts, p.dts, p.time_base) for _, p in packets] == before


def test_recording_sink_interleaves_by_timestamp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    video, audio = VideoEncoder(ENC, threads=1), AudioEncoder(ENC)
    clock = RoomClock()
    output = EncodedOutput(ENC, new_output_track(video.codec_info, TrackKind.VIDEO, clock),
                           new_output_track(audio.codec_info, TrackKind.AUDIO, clock))
    sink = RecordingSink(tmp_path / "rec.mp4", output)
    written: list[float] = []
    original = Fmp4Writer.write

    def spy(self: Fmp4Writer, packet: av.Packet, kind: str) -> bool:
        written.append(float(packet.dts * packet.time_base))
        return original(self, packet, kind)

    monkeypatch.setattr(Fmp4Writer, "write", spy)
    packets = encode_clip(None, video, audio, seconds=2.0)
    for kind in ("video", "audio"):  # all of one stream first: the sink must merge them
        track = output.video_track if kind == "video" else output.audio_track
        for packet_kind, packet in packets:
            if packet_kind == kind:
                track.push_packet(packet)
    sink.start()
    stats = sink.stop()
    assert written == sorted(written) and len(written) == len(packets)
    audio_in = sum(kind == "audio" for kind, _ in packets)
    assert stats.video_packets == 45
    # the file starts at the first video keyframe: the 0.5 s of audio before it is dropped
    assert stats.audio_packets + stats.dropped == audio_in and 20 <= stats.dropped <= 26
    assert output.video_track._packet_subs == ()  # unsubscribed when stopped


def test_composition_recorded_end_to_end(tmp_path: Path) -> None:
    bus = FrameBus()
    canvas = Canvas(width=320, height=180, fps=30)
    compositor = Compositor(canvas, bus)
    compositor.set_regions([
        PlacedRegion(x=0, y=0, w=160, h=180, participant_id="p1", fit="fill"),
        PlacedRegion(x=160, y=0, w=160, h=180, participant_id="p2", fit="fill"),
    ])
    p1 = bus.create_track("video", "camera", "p1")
    p2 = bus.create_track("video", "camera", "p2")
    compositor.render()  # subscribe, then publish one picture each
    p1.push_frame(av.VideoFrame.from_ndarray(np.full((360, 640, 3), RED, np.uint8), format="rgb24"))
    p2.push_frame(av.VideoFrame.from_ndarray(np.full((240, 320, 3), BLUE, np.uint8), format="rgb24"))

    composition = Composition(canvas, compositor, bus.clock, audio=ToneMix(bus.clock, stereo_tone))
    output = composition.attach(ENC)
    sink = RecordingSink(tmp_path / "room.mp4", output).start()
    composition.start()
    try:
        wait_for_video_packets(sink, 75)
    finally:
        stats = sink.stop()
        composition.detach(output)
        composition.stop()
    assert sink.error is None
    assert stats.video_packets >= 60 and stats.audio_packets > 0
    info = probe(tmp_path / "room.mp4")
    assert {s["codec_type"] for s in info["streams"]} == {"video", "audio"}
    assert abs(float(info["format"]["duration"]) - stats.duration_s) < 0.2
    frames, samples, rate = decode_file(tmp_path / "room.mp4")
    assert len(frames) == stats.video_packets
    check_content(frames, samples, rate, left=(80, 90), right=(240, 90))


def test_room_with_the_real_mixer_recorded(tmp_path: Path) -> None:
    """Cameras and microphones on the bus, the AudioMixer's composite mix (p1 left, p2 right),
    the compositor, one encoder pair, the recorder: the file shows and sounds like the room."""
    bus = FrameBus()
    canvas = Canvas(width=320, height=180, fps=30)
    compositor = Compositor(canvas, bus)
    compositor.set_regions([PlacedRegion(x=0, y=0, w=160, h=180, participant_id="p1", fit="fill"),
                            PlacedRegion(x=160, y=0, w=160, h=180, participant_id="p2", fit="fill")])
    cams = [bus.create_track("video", "camera", pid) for pid in ("p1", "p2")]
    mics = [bus.create_track("audio", "mic", pid) for pid in ("p1", "p2")]
    mixer = AudioMixer(bus)
    mix = mixer.add_output(AudioSelection(channels={"p1": "left", "p2": "right"}))
    compositor.render()
    for cam, colour in zip(cams, (RED, BLUE), strict=True):
        cam.push_frame(av.VideoFrame.from_ndarray(np.full((180, 320, 3), colour, np.uint8), format="rgb24"))

    stop = threading.Event()

    def speak() -> None:  # each microphone sends a 20 ms tone block on the room clock's pace
        block = 0
        started = time.monotonic()
        while not stop.is_set():
            for mic, hz in zip(mics, (440, 1000), strict=True):
                mono = stereo_tone(block * 960, 960, hz, hz)
                frame = samples_to_frame(mono, block * 960)
                mic.push_frame(frame)
            block += 1
            stop.wait(max(0.0, started + block * 0.02 - time.monotonic()))

    speaker = threading.Thread(target=speak, daemon=True)
    speaker.start()
    mixer.start()
    composition = Composition(canvas, compositor, bus.clock, audio=mix)
    output = composition.attach(ENC)
    sink = RecordingSink(tmp_path / "mixed.mp4", output).start()
    composition.start()
    try:
        wait_for_video_packets(sink, 75)
    finally:
        stats = sink.stop()
        composition.stop()
        stop.set()
        mixer.close()
    assert stats.video_packets >= 60 and stats.audio_packets > 50
    frames, samples, rate = decode_file(tmp_path / "mixed.mp4")
    check_content(frames, samples, rate, left=(80, 90), right=(240, 90))
