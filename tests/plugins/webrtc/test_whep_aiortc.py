"""WHEP of the room composite: one shared encode for every viewer, a late viewer starts at
a keyframe asked for at once, and the picture is the room's (a test source's colour)."""

from __future__ import annotations

import numpy as np

from tests.plugins.webrtc.clients import Viewer
from tests.plugins.webrtc.conftest import Rtc, wait_for


def centre(frame: object) -> np.ndarray:
    rgb = frame.to_ndarray(format="rgb24")  # type: ignore[attr-defined]
    h, w = rgb.shape[:2]
    return rgb[h // 2 - 8:h // 2 + 8, w // 2 - 8:w // 2 + 8].reshape(-1, 3).mean(axis=0)


async def test_viewers_share_one_encoder_and_late_ones_start_at_once(rtc: Rtc) -> None:
    room = (await rtc.api.create_room(room_id="whep", canvas={"width": 640, "height": 360, "fps": 15}))["room_id"]
    await rtc.api.add_test_participant(room, "red", pattern={"color": "FF0000", "tone_hz": 440})
    token = await rtc.api.join_token(room, "viewer")
    viewers = [Viewer(), Viewer(), Viewer()]
    try:
        status, headers, _ = await viewers[0].play(f"{rtc.url}/whep/{room}", token)
        assert status == 201 and headers["Location"].startswith("/webrtc/sessions/")
        frame = await wait_for(lambda: viewers[0].frames[-1] if viewers[0].frames else None, "a composite frame")
        assert np.abs(centre(frame) - (255, 0, 0)).max() < 40
        await wait_for(lambda: viewers[0].audio_frames > 10, "composite audio at the viewer")
        composite = rtc.node.rooms.rooms[room].media.composites["room"]
        forced = composite.composition.stats()["encoders"][0]["keyframes_forced"]
        for viewer in viewers[1:]:
            assert (await viewer.play(f"{rtc.url}/whep/{room}", token))[0] == 201
        for viewer in viewers[1:]:
            await wait_for(lambda v=viewer: v.frames, "a late viewer's first frame")
        stats = composite.composition.stats()
        assert len(stats["encoders"]) == 1  # every viewer on one encoder
        assert stats["encoders"][0]["keyframes_forced"] > forced  # late viewers asked for a keyframe
        groups = list(rtc.plugin.playback.groups.values())
        assert len(groups) == 1 and len(groups[0].video.viewers) == 3
        for viewer in viewers:
            response = await rtc.client.delete(viewer.location, headers={"Authorization": f"Bearer {token}"})
            assert response.status == 200
        await wait_for(lambda: not rtc.plugin.playback.groups, "the shared feeds released with the last viewer")
        await wait_for(lambda: "room" not in rtc.node.rooms.rooms[room].media.composites, "the composite stopped")
    finally:
        for viewer in viewers:
            await viewer.close()
