"""A page in headless Chromium publishes its camera and microphone over WHIP with fetch();
a recording of the room composite shows its colour and its tone. Then a WHEP viewer page
plays the composite, and a viewer joining mid-GOP shows a picture (time measured, not
asserted)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from plugins.webrtc import fastpath, native_rx
from tests.e2e.chromium import fake_media, launch
from tests.e2e.test_composite_recording import assert_tones
from tests.plugins.webrtc.conftest import Rtc, open_rtc, wait_for

pytestmark = pytest.mark.e2e

COLOUR, TONE = "FF8000", 880.0

PUBLISH_JS = """
const [url, token, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
(async () => {
  const stream = await navigator.mediaDevices.getUserMedia({video: true, audio: true});
  const pc = new RTCPeerConnection();
  for (const track of stream.getTracks()) pc.addTransceiver(track, {direction: 'sendonly'});
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(r => { if (pc.iceGatheringState === 'complete') r();
                           pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r(); });
  const response = await fetch(url, {method: 'POST', body: pc.localDescription.sdp,
    headers: {'Content-Type': 'application/sdp', 'Authorization': 'Bearer ' + token}});
  if (response.status !== 201) return done('status ' + response.status + ' ' + await response.text());
  await pc.setRemoteDescription({type: 'answer', sdp: await response.text()});
  window.publisher = pc; window.location_ = response.headers.get('Location');
  done('ok');
})().catch(e => done('error ' + e));
"""

PLAY_JS = """
const [url, token, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
(async () => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', {direction: 'recvonly'});
  pc.addTransceiver('audio', {direction: 'recvonly'});
  const video = document.createElement('video');
  video.muted = true; video.autoplay = true; video.playsInline = true; document.body.appendChild(video);
  pc.ontrack = e => { video.srcObject = e.streams[0] || new MediaStream([e.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(r => { if (pc.iceGatheringState === 'complete') r();
                           pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r(); });
  const started = performance.now();
  const response = await fetch(url, {method: 'POST', body: pc.localDescription.sdp,
    headers: {'Content-Type': 'application/sdp', 'Authorization': 'Bearer ' + token}});
  if (response.status !== 201) return done({error: 'status ' + response.status + ' ' + await response.text()});
  await pc.setRemoteDescription({type: 'answer', sdp: await response.text()});
  const first = await new Promise(r => video.requestVideoFrameCallback(() => r(performance.now())));
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  const ctx = canvas.getContext('2d');
  await new Promise(r => setTimeout(r, 300));
  ctx.drawImage(video, 0, 0);
  const p = ctx.getImageData(canvas.width / 2, canvas.height / 2, 1, 1).data;
  done({first_frame_ms: first - started, centre: [p[0], p[1], p[2]], width: canvas.width});
})().catch(e => done({error: String(e)}));
"""


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    y4m, wav = fake_media(tmp_path_factory.mktemp("fake"), "orange", COLOUR, TONE)
    driver = launch(y4m, wav)
    yield driver
    driver.quit()


@pytest.fixture
async def rtc(make_node: Any) -> Any:
    async with open_rtc(make_node) as opened:
        yield opened


async def run_js(driver: Any, script: str, *args: Any) -> Any:
    """Selenium blocks: run it on a thread so the node on this loop keeps serving."""
    return await asyncio.to_thread(driver.execute_async_script, script, *args)


async def test_browser_publishes_over_whip_and_the_recording_shows_it(rtc: Rtc, browser: Any) -> None:
    room = (await rtc.api.create_room(room_id="browser", canvas={"width": 640, "height": 360, "fps": 15}))["room_id"]
    token = await rtc.api.join_token(room, "chromium")
    await asyncio.to_thread(browser.get, f"{rtc.url}/webrtc/config")
    assert await run_js(browser, PUBLISH_JS, f"{rtc.url}/whip/{room}", token) == "ok"
    participants = await rtc.api.participants(room)
    assert [p["kind"] for p in participants] == ["whip"]
    pid = participants[0]["participant_id"]
    media = rtc.node.rooms.rooms[room].media
    await wait_for(lambda: len(media.bus.tracks(pid)) == 2, "both browser tracks on the bus")
    # the browser's VP8 comes through the gateway's own receive path (vp8_receiver), not aiortc's
    session = rtc.plugin.registry.of_participant(pid)[0]
    video = [r for r in session.receivers if r.track.kind == "video"]
    await wait_for(lambda: getattr(video[0], fastpath.RECEIVER_ATTR).frames.frames_out > 10, "VP8 frames received")
    if native_rx.available():  # and on the native thread, not the loop (plugins/webrtc/_rtpin.c)
        assert getattr(video[0].transport.transport._connection, native_rx.READERS_ATTR, None) is not None

    response = await rtc.client.post(f"/v1/rooms/{room}/egress", headers=rtc.api.auth, json={
        "kind": "record", "record": {"formats": ["mp4"], "storage": {"backend": "local"}},
        "encoding": {"width": 640, "height": 360, "fps": 15, "video_kbps": 1500}})
    assert response.status == 201, await response.text()
    egress_id = (await response.json())["egress_id"]
    await asyncio.sleep(5)
    body = await (await rtc.client.delete(f"/v1/egress/{egress_id}", headers=rtc.api.auth)).json()
    assert body["status"] == "complete", body
    frame, audio = decode_short(Path(body["files"][0]["path"]))
    patch = frame[170:190, 310:330].reshape(-1, 3).mean(axis=0)
    assert np.abs(patch - (255, 128, 0)).max() < 50, patch
    assert_tones(audio, [TONE])

    # WHEP in the same browser: the composite (the browser's own colour) plays
    result = await run_js(browser, PLAY_JS, f"{rtc.url}/whep/{room}", token)
    assert "error" not in result, result
    assert np.abs(np.array(result["centre"]) - (255, 128, 0)).max() < 60, result
    # a second viewer joins mid-GOP: its first frame comes from a forced keyframe
    late = await run_js(browser, PLAY_JS, f"{rtc.url}/whep/{room}", token)
    assert "error" not in late and late["width"] == 640, late
    # WHEP of the browser participant alone: its own VP8 packets, forwarded without transcoding
    own = await run_js(browser, PLAY_JS, f"{rtc.url}/whep/{room}/{pid}", token)
    assert "error" not in own and own["width"] == 320, own  # the camera's size: not the composite's
    assert np.abs(np.array(own["centre"]) - (255, 128, 0)).max() < 60, own
    forwarded = [g for key, g in rtc.plugin.playback.groups.items() if key[1] == pid]
    assert forwarded and forwarded[0].video_codec == "vp8" and forwarded[0].video.packets > 0
    print(f"WHEP first frame: {result['first_frame_ms']:.0f} ms, mid-GOP joiner {late['first_frame_ms']:.0f} ms")


def decode_short(path: Path) -> tuple[np.ndarray, np.ndarray]:
    import av

    with av.open(str(path)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    with av.open(str(path)) as container:
        chunks = [f.to_ndarray() for f in container.decode(audio=0)]
    audio = np.concatenate([c.mean(axis=0) if c.ndim == 2 else c for c in chunks])
    assert len(frames) > 30, len(frames)
    return frames[-1].astype(int), audio
