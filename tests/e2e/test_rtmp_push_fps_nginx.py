"""A composite push at an fps below the canvas's reaches nginx-rtmp at the requested rate
(ffprobe and the packets' spacing agree); a push whose every URL has failed ends as a failed
task with its reason, and lets its composite go."""

from __future__ import annotations

import itertools
import socket
import statistics
from fractions import Fraction
from pathlib import Path

import av
import pytest

from tests.e2e.rtmp_gateway import Gateway, assert_colour, decode, gateway_factory, wait_until  # noqa: F401
from tests.e2e.rtmp_peers import NginxRtmp, ffprobe, nginx_rtmp  # noqa: F401
from tests.e2e.test_rtmp_push_nginx_resilience import read_frames

pytestmark = pytest.mark.e2e
CANVAS = {"width": 320, "height": 240, "fps": 30}


def closed_port_url(stream: str) -> str:
    with socket.socket() as probe:  # bound then closed: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"rtmp://127.0.0.1:{port}/live/{stream}"


async def test_push_runs_at_the_encoding_fps_not_the_canvas_fps(gateway_factory, nginx_rtmp: NginxRtmp,  # noqa: F811
                                                                tmp_path: Path) -> None:
    gw: Gateway = await gateway_factory()
    await gw.room("fps", canvas=CANVAS)
    await gw.call("POST", "/v1/rooms/fps/ingress", 201, kind="test", identity="red",
                  pattern={"color": "FF0000", "width": 160, "height": 120, "fps": 30})
    url = nginx_rtmp.url("ten")
    push = await gw.push("fps", [url], encoding={"width": 320, "height": 240, "fps": 10, "video_kbps": 300,
                                                 "gop_s": 0.5})
    await gw.wait_state(push["egress_id"], url, "running")
    frames = await read_frames(url, tmp_path / "ten.flv", seconds=3)
    assert_colour(frames[-1], (255, 0, 0), (0.3, 0.3, 0.7, 0.7))
    video = next(s for s in ffprobe(tmp_path / "ten.flv")["streams"] if s["codec_type"] == "video")
    # 10/1 when every frame came on time; a loaded machine skipping canvas frames lowers the average
    assert video["r_frame_rate"] == "10/1" or 7 <= float(Fraction(video["avg_frame_rate"])) <= 10.5, video
    with av.open(str(tmp_path / "ten.flv")) as container:
        stream = container.streams.video[0]
        stamps = [float(p.pts * p.time_base) for p in container.demux(stream) if p.pts is not None]
    steps = [b - a for a, b in itertools.pairwise(stamps)]
    # 100 ms apart, not 33 (a skipped canvas frame may bring one 67 ms closer to the next)
    assert len(steps) >= 10 and min(steps) >= 0.06 and statistics.median(steps) >= 0.095, steps
    await gw.call("DELETE", f"/v1/egress/{push['egress_id']}", 200)


async def test_push_whose_urls_all_failed_ends_failed(gateway_factory) -> None:  # noqa: F811
    gw: Gateway = await gateway_factory("plugins.rtmp.reconnect_window_s=1", "plugins.rtmp.connect_timeout_s=1")
    await gw.room("dead", canvas=CANVAS)
    await gw.call("POST", "/v1/rooms/dead/ingress", 201, kind="test", identity="red",
                  pattern={"color": "FF0000", "width": 160, "height": 120, "fps": 15})
    urls = [closed_port_url("a"), closed_port_url("b")]
    push = await gw.push("dead", urls, encoding={"width": 320, "height": 240, "fps": 15, "video_kbps": 300})
    egress_id = push["egress_id"]

    async def ended() -> bool:
        return bool(gw.named("egress.ended", egress_id=egress_id))
    await wait_until(ended, "the push ends once every URL failed")
    event = gw.named("egress.ended", egress_id=egress_id)[0]
    assert event.data["status"] == "failed" and event.data["error"]["code"] == "all_urls_failed"
    assert all(f"{u.rsplit('/', 1)[0]}/" in event.data["error"]["message"] for u in urls)
    for url in urls:
        assert gw.url_states(egress_id, url) == ["connecting", "failure", "idle"]
    details = await gw.egress(egress_id)
    assert details["status"] == "failed" and details["error"]["code"] == "all_urls_failed"
    assert not gw.node.rooms.rooms["dead"].media.composites  # the encoder it held is gone
    assert (await gw.call("DELETE", f"/v1/egress/{egress_id}"))  # ending it again is harmless
