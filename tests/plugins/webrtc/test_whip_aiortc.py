"""WHIP ingest with an aiortc publisher shaped like OBS, and a WHEP viewer of that participant."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from gateway.media.track import TrackKind
from tests.api.conftest import EventLog
from tests.plugins.webrtc.clients import Publisher, Viewer
from tests.plugins.webrtc.conftest import Rtc, wait_for


async def test_obs_shape_h264_reaches_the_bus_undecoded_and_is_forwarded(rtc: Rtc, green_ts: Path) -> None:
    rtc_node, client, api = rtc.node, rtc.client, rtc.api
    room = (await api.create_room(room_id="obs"))["room_id"]
    events = EventLog(rtc_node, room)
    token = await api.join_token(room, "obs-studio")
    publisher = Publisher(green_ts)
    viewer = Viewer(("H264",))
    try:
        status, headers = await publisher.publish(rtc_node.url, room, token)
        assert status == 201
        assert headers["Location"].startswith("/webrtc/sessions/") and headers["ETag"]
        participants = await api.participants(room)
        assert [(p["identity"], p["kind"]) for p in participants] == [("obs-studio", "whip")]
        pid = participants[0]["participant_id"]
        media = rtc_node.rooms.rooms[room].media
        video = await wait_for(lambda: media.bus.find(pid, TrackKind.VIDEO), "a video track on the bus")
        audio = await wait_for(lambda: media.bus.find(pid, TrackKind.AUDIO), "an audio track on the bus")
        assert video.codec.name == "h264" and audio.codec.name == "opus"

        status, _, _ = await viewer.play(f"{rtc_node.url}/whep/{room}/{pid}", token)
        assert status == 201
        frame = await wait_for(lambda: viewer.frames[-1] if viewer.frames else None, "a frame at the viewer")
        rgb = frame.to_ndarray(format="rgb24")
        patch = rgb[rgb.shape[0] // 2 - 8:rgb.shape[0] // 2 + 8, rgb.shape[1] // 2 - 8:rgb.shape[1] // 2 + 8]
        assert np.abs(patch.reshape(-1, 3).mean(axis=0) - (0, 255, 0)).max() < 40
        # forwarded as it came: the track was never decoded, its packets went to the viewer
        groups = list(rtc.plugin.playback.groups.values())
        assert len(groups) == 1 and groups[0].video is not None and groups[0].video.packets > 0
        assert video._decoder is None and video.packets_in > 0
        assert rtc_node.rooms.rooms[room].media.composites == {}

        status = (await client.delete(publisher.location, headers={"Authorization": f"Bearer {token}"})).status
        assert status == 200
        await wait_for(lambda: events.named("participant.left"), "participant.left after DELETE")
        assert await api.participants(room) == []
    finally:
        events.close()
        await viewer.close()
        await publisher.close()
