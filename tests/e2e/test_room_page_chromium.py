"""The room page in two headless Chromiums with different colours and tones, and a test
source: each page's own JavaScript finds all three colours in the playing composite, and
its WebAudio analyser hears the other browser's tone and the test source's, not its own."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from gateway.media.track import TrackKind, TrackSource
from tests.e2e.chromium import fake_media, launch
from tests.plugins.webrtc.conftest import open_rtc, wait_for

pytestmark = pytest.mark.e2e

BROWSERS = {"ada": ("FF8000", 600.0), "bob": ("00C0FF", 850.0)}
SOURCE = ("00FF00", 1250.0)
RGB = {name: tuple(int(c[i:i + 2], 16) for i in (0, 2, 4)) for name, (c, _) in {**BROWSERS, "src": SOURCE}.items()}

NO_AEC_JS = """
const getUserMedia = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
navigator.mediaDevices.getUserMedia = (c) => getUserMedia(c && c.audio ? {...c, audio: {echoCancellation: false,
  noiseSuppression: false, autoGainControl: false}} : c);
"""

PROBE_JS = """
const [colours, tones, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
(async () => {
  const app = window.mediagate;
  const video = document.getElementById('stage');
  const deadline = performance.now() + 40000;
  while ((!app.mixStream || !video.videoWidth || video.readyState < 2) && performance.now() < deadline)
    await new Promise(r => setTimeout(r, 100));
  if (!video.videoWidth) return done({error: 'no picture'});
  const canvas = document.createElement('canvas');
  canvas.width = video.videoWidth; canvas.height = video.videoHeight;
  const ctx = canvas.getContext('2d', {willReadFrequently: true});
  const found = {};
  for (let round = 0; round < 160; round++) {
    ctx.drawImage(video, 0, 0);
    const data = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
    for (const [name, rgb] of Object.entries(colours)) {
      let count = 0;
      for (let i = 0; i < data.length; i += 16)
        if (Math.abs(data[i] - rgb[0]) < 45 && Math.abs(data[i + 1] - rgb[1]) < 45
            && Math.abs(data[i + 2] - rgb[2]) < 45) count++;
      found[name] = Math.max(found[name] || 0, count);
    }
    if (Object.values(found).every(c => c > 100)) break;
    await new Promise(r => setTimeout(r, 250));
  }
  const audio = new AudioContext();
  await audio.resume();
  const source = audio.createMediaStreamSource(app.mixStream);
  const analyser = audio.createAnalyser();
  analyser.fftSize = 8192; analyser.smoothingTimeConstant = 0;
  source.connect(analyser);
  const bins = new Float32Array(analyser.frequencyBinCount);
  for (let i = 0; i < 200; i++) {  // wait for sound to arrive at all
    analyser.getFloatFrequencyData(bins);
    if (Math.max(...bins) > -120) break;
    await new Promise(r => setTimeout(r, 100));
  }
  const level = {};
  for (let i = 0; i < 30; i++) {
    await new Promise(r => setTimeout(r, 100));
    analyser.getFloatFrequencyData(bins);
    for (const [name, hz] of Object.entries(tones)) {
      const bin = Math.round(hz / (audio.sampleRate / analyser.fftSize));
      const peak = Math.max(...bins.slice(bin - 2, bin + 3));
      level[name] = Math.max(level[name] ?? -200, peak);
    }
  }
  audio.close();
  done({pixels: found, levels: level, size: [canvas.width, canvas.height]});
})().catch(e => done({error: String(e)}));
"""


@pytest.fixture(scope="module")
def browsers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    folder = tmp_path_factory.mktemp("room-fake")
    drivers: dict[str, Any] = {}
    try:
        for name, (colour, tone) in BROWSERS.items():
            driver = drivers[name] = launch(*fake_media(folder, name, colour, tone))
            # Chrome's echo canceller, fed the other's tone as its playout reference, leaks a faint
            # copy of it into the capture (≈ 14 dB down, measured): the mix-minus is judged without it
            driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": NO_AEC_JS})
        yield drivers
    finally:
        for driver in drivers.values():
            driver.quit()


@pytest.fixture
async def rtc(make_node: Any) -> Any:
    async with open_rtc(make_node) as opened:
        yield opened


async def test_two_browsers_see_everyone_and_hear_everyone_but_themselves(rtc: Any, browsers: dict[str, Any]) -> None:
    room = (await rtc.api.create_room(room_id="meet", canvas={"width": 640, "height": 360, "fps": 15}))["room_id"]
    await rtc.api.add_test_participant(room, "source", pattern={"color": SOURCE[0], "tone_hz": SOURCE[1]})
    try:
        await check_room(rtc, room, browsers)
    finally:  # leave the pages first: the node then stops without waiting on open sockets
        for driver in browsers.values():
            await asyncio.to_thread(driver.get, "about:blank")


async def check_room(rtc: Any, room: str, browsers: dict[str, Any]) -> None:
    for name, driver in browsers.items():
        token = await rtc.api.join_token(room, name, name=name.title())
        await asyncio.to_thread(driver.get, f"{rtc.url}/rooms/{room}#token={token}")
    await wait_for(lambda: sum(1 for p in rtc.node.rooms.rooms[room].participants.values()
                               if p.kind.value == "webrtc" and rtc.node.rooms.rooms[room].media.bus.tracks(
                                   p.participant_id)) == 2, "both browsers publishing", timeout=60)
    media = rtc.node.rooms.rooms[room].media
    browser_video = [t for t in media.bus.tracks(kind=TrackKind.VIDEO) if t.codec is not None]
    await wait_for(lambda: all(t.frames_in > 30 for t in browser_video),
                   f"both browsers' pictures decoded for the composite: {[t.info() for t in browser_video]}",
                   timeout=60)
    tones = {"ada": BROWSERS["ada"][1], "bob": BROWSERS["bob"][1], "src": SOURCE[1]}
    tones.update({f"{k}_near": hz + 45 for k, hz in tones.items()} | {f"{k}_below": hz - 45 for k, hz in tones.items()})
    results = await asyncio.gather(*[asyncio.to_thread(d.execute_async_script, PROBE_JS, RGB, tones)
                                     for d in browsers.values()])
    for name, result in zip(browsers, results, strict=True):
        assert "error" not in result, (name, result)
        assert all(count > 100 for count in result["pixels"].values()), (name, result)
        levels = result["levels"]
        # a tone is heard when it stands out of the codec noise right next to it (45 Hz off);
        # its own tone is far below every tone it hears. The codec's noise is not flat (one side
        # of a frequency can lie nearer a loud tone than the other: 6.7 dB apart once on a loaded
        # host), so "no peak" is judged against the noise on both sides
        heard = [levels[other] for other in ("ada", "bob", "src") if other != name]
        for other in ("ada", "bob", "src"):
            if other != name:
                assert levels[other] > levels[f"{other}_near"] + 10, (name, levels)
        noise = max(levels[f"{name}_near"], levels[f"{name}_below"])
        assert levels[name] < noise + 6, (name, levels)  # no peak at its own tone
        assert levels[name] < min(heard) - 15, (name, levels)  # present, it would be as loud as they are
    # the page shows who is present
    ada, bob = browsers["ada"], browsers["bob"]
    names = await asyncio.to_thread(ada.execute_script,
                                    "return [...document.querySelectorAll('#people .name')].map(e => e.textContent)")
    assert len(names) == 3 and any("Bob" in n for n in names), names
    people = rtc.node.rooms.rooms[room].participants
    ada_p = next(p for p in people.values() if p.identity == "ada")
    # the mic button mutes for everyone (setstate on the socket), and unmutes
    await asyncio.to_thread(ada.execute_script, "document.getElementById('btn-mic').click()")
    await wait_for(lambda: ada_p.audio_muted, "ada muted by her page")
    await wait_for(lambda: bob_sees(bob, "Ada", "mic off"), "bob's page shows ada muted")
    await asyncio.to_thread(ada.execute_script, "document.getElementById('btn-mic').click()")
    await wait_for(lambda: not ada_p.audio_muted, "ada unmuted")
    # screen share from the page: published as source screen, stopped again
    await asyncio.to_thread(ada.execute_script, "document.getElementById('btn-screen').click()")
    media = rtc.node.rooms.rooms[room].media
    await wait_for(lambda: media.bus.find(ada_p.participant_id, TrackKind.VIDEO, TrackSource.SCREEN),
                   "ada's screen share on the bus")
    await asyncio.to_thread(ada.execute_script, "document.getElementById('btn-screen').click()")
    await wait_for(lambda: not media.bus.find(ada_p.participant_id, TrackKind.VIDEO, TrackSource.SCREEN),
                   "ada's screen share stopped")
    # chat reaches the other page
    await asyncio.to_thread(ada.execute_script, "document.getElementById('chat-input').value = 'hello bob';"
                                                "document.getElementById('chat-form').requestSubmit()")
    await wait_for(lambda: "hello bob" in bob.execute_script(
        "return document.getElementById('messages').textContent"), "the chat message on bob's page")
    # leaving ends bob's participant (and his sessions)
    await asyncio.to_thread(bob.execute_script, "document.getElementById('btn-leave').click()")
    await wait_for(lambda: all(p.identity != "bob" for p in people.values()), "bob left")
    await wait_for(lambda: not [s for s in rtc.plugin.registry.sessions.values()
                                if getattr(s, "participant_id", None) not in people],
                   "bob's sessions ended")

    # a room with a password: the lobby asks for a name and the password, then joins
    locked = (await rtc.api.create_room(room_id="locked", password="s3cret"))["room_id"]
    await asyncio.to_thread(bob.get, f"{rtc.url}/rooms/{locked}")
    await asyncio.to_thread(bob.execute_script, """
        document.getElementById('join-name').value = 'Bob Builder';
        document.getElementById('join-password').value = 's3cret';
        document.getElementById('join-form').requestSubmit();""")
    await wait_for(lambda: [p.name for p in rtc.node.rooms.rooms[locked].participants.values()] == ["Bob Builder"],
                   "bob in the password room")


def bob_sees(driver: Any, name: str, text: str) -> bool:
    return bool(driver.execute_script(
        "return [...document.querySelectorAll('#people li')].some(li => li.textContent.includes(arguments[0])"
        " && li.textContent.includes(arguments[1]))", name, text))
