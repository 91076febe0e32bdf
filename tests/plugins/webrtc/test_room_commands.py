"""The room page's signalling without a browser: webrtc.publish over the room WebSocket
(camera and screen), its permission bits, and a muted participant no longer forwarded."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from aiortc import RTCSessionDescription

from gateway.media.track import TrackKind, TrackSource
from gateway.security import Permission
from tests.plugins.webrtc.clients import Publisher, Viewer
from tests.plugins.webrtc.conftest import Rtc, wait_for


async def command(ws: Any, message: dict[str, Any]) -> dict[str, Any]:
    await ws.send_str(json.dumps(message))
    while True:
        reply = json.loads((await ws.receive(timeout=30)).data)
        if reply.get("type") in ("result", "error") and reply.get("id") == message.get("id"):
            return reply


async def test_screen_share_over_the_room_socket(rtc: Rtc, green_ts: Path) -> None:
    room = (await rtc.api.create_room(room_id="screen"))["room_id"]
    no_screen = await rtc.api.join_token(room, "eve", permissions=int(Permission.ENTER | Permission.SEND_VIDEO))
    token = await rtc.api.join_token(room, "ann")
    publisher = Publisher(green_ts)
    try:
        offer = await publisher.offer()
        ws = await rtc.client.ws_connect(f"/v1/rooms/{room}/ws", params={"access_token": no_screen})
        assert json.loads((await ws.receive(timeout=30)).data)["type"] == "welcome"
        refused = await command(ws, {"cmd": "webrtc.publish", "sdp": offer, "source": "screen", "id": 1})
        assert refused["type"] == "error" and refused["error"]["code"] == "permission_denied", refused
        await ws.close()

        ws = await rtc.client.ws_connect(f"/v1/rooms/{room}/ws", params={"access_token": token})
        welcome = json.loads((await ws.receive(timeout=30)).data)
        pid = welcome["participant_id"]
        reply = await command(ws, {"cmd": "webrtc.publish", "sdp": offer, "source": "screen", "id": 2})
        assert reply["type"] == "result" and reply["sdp"].startswith("v=0"), reply
        await publisher.pc.setRemoteDescription(RTCSessionDescription(reply["sdp"], "answer"))
        media = rtc.node.rooms.rooms[room].media
        track = await wait_for(lambda: media.bus.find(pid, TrackKind.VIDEO, TrackSource.SCREEN), "a screen track")
        assert track.participant_id == pid
        ended = await command(ws, {"cmd": "webrtc.unpublish", "session_id": reply["session_id"], "id": 3})
        assert ended["ended"] is True
        await wait_for(lambda: not media.bus.tracks(pid), "the screen track removed")
        assert [p["participant_id"] for p in await rtc.api.participants(room)] == [pid]  # still in the room
        garbage = await command(ws, {"cmd": "webrtc.publish", "sdp": "nope", "id": 4})
        assert garbage["type"] == "error" and garbage["error"]["code"] == "bad_sdp"
        await ws.close()
    finally:
        await publisher.close()


async def test_muted_participant_stops_being_forwarded(rtc: Rtc, green_ts: Path) -> None:
    room = (await rtc.api.create_room(room_id="mute"))["room_id"]
    token = await rtc.api.join_token(room, "obs")
    publisher, viewer = Publisher(green_ts), Viewer()
    try:
        assert (await publisher.publish(rtc.url, room, token))[0] == 201
        pid = (await rtc.api.participants(room))[0]["participant_id"]
        media = rtc.node.rooms.rooms[room].media
        await wait_for(lambda: media.bus.find(pid, TrackKind.VIDEO), "the video track")
        assert (await viewer.play(f"{rtc.url}/whep/{room}/{pid}", token))[0] == 201
        await wait_for(lambda: viewer.frames, "forwarded frames")
        feed = next(iter(rtc.plugin.playback.groups.values())).video
        response = await rtc.client.patch(f"/v1/rooms/{room}/participants/{pid}", json={"video_muted": True},
                                          headers=rtc.api.auth)
        assert response.status == 200, await response.text()
        before = feed.packets
        arrived = media.bus.find(pid, TrackKind.VIDEO).packets_in
        await wait_for(lambda: media.bus.find(pid, TrackKind.VIDEO).packets_in > arrived + 15, "packets keep arriving")
        assert feed.packets - before <= 1  # at most one already past the gate
        await rtc.client.patch(f"/v1/rooms/{room}/participants/{pid}", json={"video_muted": False},
                               headers=rtc.api.auth)
        await wait_for(lambda: feed.packets > before + 5, "forwarding again after unmute")
    finally:
        await viewer.close()
        await publisher.close()
