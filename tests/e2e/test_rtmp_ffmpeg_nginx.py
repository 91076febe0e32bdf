"""Issue 8, RTMP in and out with real peers: the ffmpeg CLI publishes a red picture and a
1 kHz tone as H.264 with B-frames + AAC into a room; the room pushes to nginx-rtmp; ffmpeg
reads the pushes back from nginx. Checked by content (colour in the region, tone in the
spectrum) and by ffprobe (size, fps, codecs). The passthrough push must carry the source's
H.264 unchanged (same avcC, B-frames) with no encoder running."""

from __future__ import annotations

import asyncio
from pathlib import Path

import av
import pytest

from gateway.media.track import TrackKind
from tests.e2e.rtmp_gateway import Gateway, assert_colour, decode, gateway_factory, peak_hz, wait_until  # noqa: F401
from tests.e2e.rtmp_peers import NginxRtmp, ffmpeg_push, ffmpeg_read, ffprobe, kill, nginx_rtmp  # noqa: F401

pytestmark = pytest.mark.e2e
RED = (255, 0, 0)
GREEN = (0, 255, 0)
TONE = 1000.0


async def read_back(url: str, out: Path, seconds: float = 3) -> dict:
    reader = ffmpeg_read(url, out, seconds=seconds)
    code = await asyncio.to_thread(reader.wait, 90)
    assert code == 0, reader.stderr.read().decode() if reader.stderr else code
    return ffprobe(out)


def streams(info: dict) -> dict[str, dict]:
    return {s["codec_type"]: s for s in info["streams"]}


async def test_ingest_bframes_passthrough_and_mixed_push(gateway_factory, nginx_rtmp: NginxRtmp,  # noqa: F811
                                                         tmp_path: Path) -> None:
    gw: Gateway = await gateway_factory()
    await gw.room("r", canvas={"width": 640, "height": 360, "fps": 25})
    ingress = await gw.rtmp_ingress("r", "obs")
    assert ingress["rtmp_url"].startswith("rtmp://127.0.0.1:") and ingress["rtmp_url"].endswith("/live")
    assert ingress["publish_url"] == f"{ingress['rtmp_url']}/{ingress['stream_key']}" and ingress["state"] == "inactive"
    publisher = ffmpeg_push(ingress["publish_url"], seconds=60, color="red", tone_hz=TONE, bframes=2)
    publishers = [publisher]
    try:
        participant = await gw.participant("r", "obs")
        assert participant["kind"] == "rtmp"
        assert sorted(t["codec"] for t in participant["tracks"]) == ["aac", "h264"]
        state = await gw.call("GET", f"/v1/ingress/{ingress['ingress_id']}", 200)
        assert state["state"] == "publishing" and state["participant_id"] == participant["participant_id"]
        media = gw.node.rooms.rooms["r"].media
        source = media.bus.find(participant["participant_id"], TrackKind.VIDEO)
        assert source is not None and source.codec is not None

        # ---- passthrough: the participant's own packets, no encoder
        push = await gw.push("r", [nginx_rtmp.url("pass")], source={"participant": "obs"})
        assert push["mode"] == "passthrough"
        await gw.wait_state(push["egress_id"], nginx_rtmp.url("pass"), "running")
        info = await read_back(nginx_rtmp.url("pass"), tmp_path / "pass.flv")
        assert not media.composites and gw.node.media.stats()["compositions"] == 0  # nothing encodes
        assert source.decode_errors == 0 and source._decoder is None  # nor decodes
        video = streams(info)["video"]
        assert (video["codec_name"], video["width"], video["height"]) == ("h264", 320, 240)
        assert video["has_b_frames"] == 2 and video["r_frame_rate"] == "30/1"
        with av.open(str(tmp_path / "pass.flv")) as container:
            assert container.streams.video[0].codec_context.extradata == source.codec.extradata
        frames, audio, rate = decode(tmp_path / "pass.flv")
        assert len(frames) >= 60
        assert_colour(frames[-1], RED, (0, 0, 1, 1))
        assert audio is not None and abs(peak_hz(audio, rate) - TONE) < 15

        # OBS reconnects (same key, new encoder session, timestamps from 0): the push follows it
        # on the same CDN connection, with the new sequence headers
        kill(publisher)
        publisher = ffmpeg_push(ingress["publish_url"], seconds=60, color="lime", tone_hz=TONE, bframes=2)

        async def resumed() -> bool:
            return bool(gw.named("egress.status", egress_id=push["egress_id"], source="resumed"))
        await wait_until(resumed, "the passthrough push follows the re-published source")
        await read_back(nginx_rtmp.url("pass"), tmp_path / "pass2.flv", seconds=2)
        frames, _, _ = decode(tmp_path / "pass2.flv")
        assert_colour(frames[-1], GREEN, (0, 0, 1, 1))
        stopped = await gw.call("DELETE", f"/v1/egress/{push['egress_id']}", 200)
        assert stopped["status"] == "complete" and stopped["packets"] > 100
        assert gw.url_states(push["egress_id"], nginx_rtmp.url("pass")) == [
            "connecting", "running", "disconnecting", "idle"]  # never reconnected

        # ---- mixed: the room composite at the requested size and rate, plus an audio-only push
        encoding = {"width": 640, "height": 360, "fps": 25, "video_kbps": 800}
        mixed = await gw.push("r", [nginx_rtmp.url("mixed")], encoding=encoding)
        sound = await gw.push("r", [nginx_rtmp.url("sound")], encoding=encoding, audio_only=True)
        assert mixed["mode"] == "composite"
        await gw.wait_state(mixed["egress_id"], nginx_rtmp.url("mixed"), "running")
        await gw.wait_state(sound["egress_id"], nginx_rtmp.url("sound"), "running")
        info, sound_info = await asyncio.gather(read_back(nginx_rtmp.url("mixed"), tmp_path / "mixed.flv"),
                                                read_back(nginx_rtmp.url("sound"), tmp_path / "sound.flv"))
        video, audio_stream = streams(info)["video"], streams(info)["audio"]
        assert (video["codec_name"], video["width"], video["height"], video["r_frame_rate"]) == (
            "h264", 640, 360, "25/1")
        assert (audio_stream["codec_name"], audio_stream["sample_rate"]) == ("aac", "48000")
        frames, audio, rate = decode(tmp_path / "mixed.flv")
        assert len(frames) >= 20  # a loaded machine may skip composite frames
        # 4:3 fitted into 16:9: red in the middle, the background at the sides
        assert_colour(frames[-1], GREEN, (0.3, 0.1, 0.7, 0.9))
        assert audio is not None and abs(peak_hz(audio, rate) - TONE) < 15
        assert list(streams(sound_info)) == ["audio"]
        _, audio, rate = decode(tmp_path / "sound.flv")
        assert audio is not None and abs(peak_hz(audio, rate) - TONE) < 15
        for egress in (mixed, sound):
            assert (await gw.call("DELETE", f"/v1/egress/{egress['egress_id']}", 200))["status"] == "complete"
    finally:
        for proc in [*publishers, publisher]:
            kill(proc)
