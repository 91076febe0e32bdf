"""Where play-in may read from: local paths confined to the allowed directories (symlinks and
``..`` resolved first), container and protocol whitelists, clear errors for what cannot play."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.errors import ConfigError, Forbidden, NotFound, UnsupportedMediaType, ValidationFailed
from plugins.play.config import PlayConfig
from plugins.play.source import local_spec, network_spec, open_source

SCHEMES = ["http", "https", "rtmp", "rtsp"]


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    root = tmp_path / "media"
    root.mkdir()
    (root / "a.mp4").write_bytes(b"x")
    return root


def test_a_file_inside_an_allowed_dir_resolves(allowed: Path) -> None:
    spec = local_spec(str(allowed / "a.mp4"), [allowed])
    assert spec.target == str((allowed / "a.mp4").resolve()) and not spec.network and spec.shown == "a.mp4"
    assert local_spec(f"file://{allowed}/a.mp4", [allowed]).target == spec.target


@pytest.mark.parametrize("path", ["/etc/hostname.mp4", "{root}/../outside.mp4", "file://{root}/%2e%2e/outside.mp4"])
def test_paths_outside_the_allowed_dirs_are_forbidden(allowed: Path, path: str) -> None:
    (allowed.parent / "outside.mp4").write_bytes(b"x")
    with pytest.raises(Forbidden) as info:
        local_spec(path.format(root=allowed), [allowed])
    assert info.value.code == "path_not_allowed"


def test_a_symlink_out_of_the_allowed_dir_is_forbidden(allowed: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.mp4"
    secret.write_bytes(b"x")
    (allowed / "link.mp4").symlink_to(secret)
    with pytest.raises(Forbidden):
        local_spec(str(allowed / "link.mp4"), [allowed])


def test_no_allowed_dirs_means_no_local_paths(allowed: Path) -> None:
    with pytest.raises(Forbidden):
        local_spec(str(allowed / "a.mp4"), [])


@pytest.mark.parametrize("path", ["a.mp4", "media/a.mp4", "/x/\x00.mp4"])
def test_relative_or_odd_paths_are_bad_requests(allowed: Path, path: str) -> None:
    with pytest.raises(ValidationFailed):
        local_spec(path, [allowed])


def test_extension_and_existence(allowed: Path) -> None:
    (allowed / "notes.txt").write_text("x")
    with pytest.raises(UnsupportedMediaType):
        local_spec(str(allowed / "notes.txt"), [allowed])
    with pytest.raises(NotFound):
        local_spec(str(allowed / "missing.mp4"), [allowed])


def test_network_urls() -> None:
    assert network_spec("https://cdn.example.com/x.m3u8", SCHEMES).network
    for url in ("ftp://host/x.mp4", "gopher://host/", "concat:/etc/passwd|/etc/hostname", "https:///x"):
        with pytest.raises(ValidationFailed):
            network_spec(url, SCHEMES)


def test_a_playlist_named_mp4_is_refused(allowed: Path) -> None:
    fake = allowed / "fake.mp4"
    fake.write_text("#EXTM3U\n#EXTINF:1,\nfile:///etc/hostname\n")
    with pytest.raises(UnsupportedMediaType) as info:
        open_source(local_spec(str(fake), [allowed]))
    assert info.value.code == "unreadable_media"


def test_a_codec_without_decoder_is_a_clear_error(allowed: Path) -> None:
    fmt = struct.pack("<HHIIHH", 0x9999, 1, 8000, 16000, 2, 16)
    riff = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", 320) + bytes(320)
    (allowed / "odd.wav").write_bytes(b"RIFF" + struct.pack("<I", len(riff)) + riff)
    with pytest.raises(UnsupportedMediaType) as info:
        open_source(local_spec(str(allowed / "odd.wav"), [allowed]))
    assert info.value.code == "unsupported_codec" and "audio codec" in info.value.message


def test_media_info_of_an_audio_file(allowed: Path) -> None:
    path = allowed / "tone.m4a"
    subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-y", "-f", "lavfi", "-i",
                    "sine=frequency=440:duration=1", "-c:a", "aac", str(path)], check=True)
    opened = open_source(local_spec(str(path), [allowed]))
    try:
        info = opened.media_info
        assert (info["has_audio"], info["has_video"], info["width"]) == (True, False, 0)
        assert 900 <= info["duration_ms"] <= 1200 and opened.seekable and opened.video is None
    finally:
        opened.close()
    with pytest.raises(UnsupportedMediaType):  # audio only and no audio wanted: nothing to play
        open_source(local_spec(str(path), [allowed]), audio=False)


def test_config_rejects_unknown_schemes() -> None:
    with pytest.raises(ValidationError):
        PlayConfig(schemes=["file"])


async def test_a_bad_plugin_section_stops_the_node(make_node: object) -> None:
    with pytest.raises(ConfigError) as info:
        await make_node("plugins.play.retry_delay=1")  # type: ignore[operator]
    assert "plugins.play" in str(info.value)


@pytest.mark.parametrize("ext", sorted(["mp4", "mov", "mkv", "flv", "ts", "mp3", "m4a", "wav"]))
def test_every_supported_container_opens(allowed: Path, ext: str) -> None:
    """The container whitelist admits each extension play-in documents (made by the ffmpeg CLI)."""
    path = allowed / f"sample.{ext}"
    video = ext not in ("mp3", "m4a", "wav")
    args = ["-f", "lavfi", "-i", "sine=frequency=440:duration=0.5"]
    if video:
        args = ["-f", "lavfi", "-i", "color=c=red:s=64x64:r=10:d=0.5", *args, "-c:v", "libx264", "-pix_fmt", "yuv420p"]
    audio_codec = {"mp3": "libmp3lame", "wav": "pcm_s16le"}.get(ext, "aac")
    subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-y", *args, "-c:a", audio_codec, "-shortest", str(path)],
                   check=True)
    opened = open_source(local_spec(str(path), [allowed]))
    try:
        assert opened.media_info["has_audio"] and opened.media_info["has_video"] is video, opened.media_info
    finally:
        opened.close()
