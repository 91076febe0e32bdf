"""The recorder's file set on prepared packets (no clock, no load): parts are cut at the first
keyframe past each split point, every packet lands in exactly one part, audio-only parts end
exactly at the split instant, and each part is a file that decodes to what was fed."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from gateway.media.audiofile import FileAudioEncoder
from gateway.media.encoder import Encoding, VideoEncoder
from plugins.record.fileset import FileSet, FileSetSpec, FinishedFile

FPS = 30


class Prepared:
    """A source that hands over a fixed list of packets, then ends."""

    def __init__(self, infos: dict, packets: list[tuple[str, av.Packet]]) -> None:
        self.infos = infos
        self.packets = packets

    def poll(self) -> list[tuple[str, av.Packet]] | None:
        out, self.packets = self.packets, []
        return out or None

    def finish(self) -> list[tuple[str, av.Packet]]:
        return []

    def close(self) -> None:
        pass


def video_packets(seconds: float) -> tuple[dict, list[tuple[str, av.Packet]]]:
    encoder = VideoEncoder(Encoding(width=64, height=48, fps=FPS, gop_s=0.5, video_kbps=100), threads=1)
    packets = []
    for index in range(int(seconds * FPS)):
        grey = np.full((48, 64, 3), (index * 7) % 256, np.uint8)
        frame = av.VideoFrame.from_ndarray(grey, format="rgb24").reformat(format="yuv420p")
        frame.pts = None
        packets += encoder.encode(frame)
    packets += encoder.flush()
    return {"video": encoder.codec_info}, [("video", p) for p in packets]


def audio_packets(seconds: float, codec: str = "aac") -> tuple[dict, list[tuple[str, av.Packet]]]:
    encoder = FileAudioEncoder(codec)  # type: ignore[arg-type]
    packets = []
    for block in range(int(seconds * 50)):
        t = (block * 960 + np.arange(960)) / 48000
        samples = (np.sin(2 * np.pi * 440 * t) * 8000).astype(np.int16)
        packets += encoder.encode(np.repeat(samples[:, None], 2, axis=1), block * 960)
    packets += encoder.flush()
    return {codec: encoder.codec_info}, [(codec, p) for p in packets]


def run(tmp_path: Path, sources: list[Prepared], formats: list[str], split_s: int,
        hls_segment_s: float = 4) -> list[FinishedFile]:
    def open_file(fmt: str, index: int, start: Fraction) -> tuple[Path, str]:
        name = f"part{index}.{'m3u8' if fmt == 'hls' else fmt}"
        return tmp_path / name, name

    files: list[FinishedFile] = []
    spec = FileSetSpec(who="t", participant_id=None, formats=formats, split_s=split_s, fps=FPS,
                       hls_segment_s=hls_segment_s)
    fileset = FileSet(spec, sources, open_file=open_file,
                      open_segment=lambda k, n: (tmp_path / f"seg{n}.ts", f"seg{n}.ts", f"seg{n}.ts"),
                      on_file=files.append, on_segment=lambda *a: None, to_wall=float)
    fileset.start()
    fileset._thread.join(timeout=60)  # the sources end: the thread finishes by itself
    fileset.stop()
    assert fileset.error is None
    return files


def test_video_parts_cut_at_keyframes_with_each_packet_once(tmp_path: Path) -> None:
    vinfo, video = video_packets(3.5)
    ainfo, audio = audio_packets(3.5)
    files = run(tmp_path, [Prepared(vinfo, video), Prepared(ainfo, audio)], ["mp4"], split_s=1)
    assert [f.index for f in files] == [1, 2, 3, 4]
    assert [float(f.start) for f in files] == pytest.approx([0, 1, 2, 3])
    assert [f.duration_s for f in files] == pytest.approx([1, 1, 1, 0.5], abs=1e-6)
    greys, audio_samples = [], 0
    for info in files:
        with av.open(str(info.path)) as container:
            frames = list(container.decode(video=0))
            assert frames[0].key_frame
            greys += [int(f.to_ndarray(format="rgb24")[24, 32, 0]) for f in frames]
        with av.open(str(info.path)) as container:
            audio_samples += sum(f.samples for f in container.decode(audio=0))
    expected = [(i * 7) % 256 for i in range(int(3.5 * FPS))]
    assert len(greys) == len(expected)  # every picture once: no gap, no overlap
    assert all(abs(a - b) <= 6 for a, b in zip(greys, expected, strict=True))
    assert audio_samples == pytest.approx(3.5 * 48000, abs=2 * 1024)


def test_audio_only_parts_end_exactly_at_the_split_point(tmp_path: Path) -> None:
    info, packets = audio_packets(2.5, "pcm")
    files = run(tmp_path, [Prepared(info, packets)], ["wav"], split_s=1)
    assert [float(f.start) for f in files] == [0, 1, 2]
    assert [f.duration_s for f in files] == pytest.approx([1, 1, 0.5], abs=0.021)
    total = 0
    for part in files:
        with av.open(str(part.path)) as container:
            total += sum(f.samples for f in container.decode(audio=0))
    assert total == pytest.approx(2.5 * 48000, abs=960)


def test_hls_part_is_a_vod_playlist_of_keyframe_segments(tmp_path: Path) -> None:
    vinfo, video = video_packets(2.0)
    ainfo, audio = audio_packets(2.0)
    files = run(tmp_path, [Prepared(vinfo, video), Prepared(ainfo, audio)], ["hls"], split_s=0, hls_segment_s=1)
    (playlist,) = files
    text = playlist.path.read_text()
    assert "#EXT-X-PLAYLIST-TYPE:VOD" in text and text.rstrip().endswith("#EXT-X-ENDLIST")
    assert [s["uri"] for s in playlist.segments] == ["seg1.ts", "seg2.ts"]
    assert [s["duration_s"] for s in playlist.segments] == pytest.approx([1, 1], abs=1e-3)
    assert sum(s["duration_s"] for s in playlist.segments) == pytest.approx(
        playlist.duration_s)
    with av.open(str(playlist.path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 2 * FPS
