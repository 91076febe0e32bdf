"""A VP8 + Opus WHIP publisher (aiortc, encoding) through the native receive path: the VP8
frames arrive whole and decode, the receiver reports see the stream, the Opus on the same
connection takes the Python path, and closing the session stops the native reader."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

from gateway.media.track import TrackKind
from plugins.webrtc import fastpath, native_rx
from tests.plugins.webrtc.clients import post_sdp
from tests.plugins.webrtc.conftest import Rtc, wait_for

P = "_RTCRtpReceiver__"


async def test_vp8_publisher_through_the_native_reader(rtc: Rtc, green_ts: Path) -> None:
    # `make test`'s install builds the module: a missing build is a failure, never a skip
    assert native_rx.available(), "plugins/webrtc/_rtpin.c is not built (pip install -e .)"
    room = (await rtc.api.create_room(room_id="vp8native"))["room_id"]
    token = await rtc.api.join_token(room, "browser-like")
    player = MediaPlayer(str(green_ts))
    pc = RTCPeerConnection()
    try:
        pc.addTransceiver(player.audio, direction="sendonly")
        video = pc.addTransceiver(player.video, direction="sendonly")
        video.setCodecPreferences([c for c in RTCRtpSender.getCapabilities("video").codecs
                                   if c.mimeType in ("video/VP8", "video/rtx")])
        await pc.setLocalDescription(await pc.createOffer())
        status, headers, body = await post_sdp(f"{rtc.node.url}/whip/{room}", pc.localDescription.sdp, token)
        assert status == 201
        await pc.setRemoteDescription(RTCSessionDescription(body, "answer"))

        pid = (await rtc.api.participants(room))[0]["participant_id"]
        media = rtc.node.rooms.rooms[room].media
        track = await wait_for(lambda: media.bus.find(pid, TrackKind.VIDEO), "a video track on the bus")
        await wait_for(lambda: media.bus.find(pid, TrackKind.AUDIO), "the Opus track on the bus")
        assert track.codec.name == "vp8"
        session = rtc.plugin.registry.of_participant(pid)[0]
        receiver = next(r for r in session.receivers if r.track.kind == "video")
        lean = getattr(receiver, fastpath.RECEIVER_ATTR)
        assert isinstance(lean, native_rx.NativeVp8)
        connection = receiver.transport.transport._connection
        native = getattr(connection, native_rx.READERS_ATTR)
        readers = list(native.readers)
        assert readers and all(r.running for r in readers)
        await wait_for(lambda: lean.stream.frames_out > 20, "VP8 frames assembled natively")

        sub = track.subscribe_video()
        frame = await wait_for(lambda: sub.latest()[0], "a decoded frame")
        rgb = frame.to_ndarray(format="rgb24")
        patch = rgb[rgb.shape[0] // 2 - 8:rgb.shape[0] // 2 + 8, rgb.shape[1] // 2 - 8:rgb.shape[1] // 2 + 8]
        assert np.abs(patch.reshape(-1, 3).mean(axis=0) - (0, 255, 0)).max() < 40
        assert track.decode_errors == 0
        streams = receiver.__dict__[P + "remote_streams"]
        await wait_for(lambda: any(s.packets_received > 50 for s in streams.values()), "receiver report statistics")
        assert receiver.getSynchronizationSources()  # "last seen" kept per source

        status = (await rtc.client.delete(headers["Location"], headers={"Authorization": f"Bearer {token}"})).status
        assert status == 200
        await wait_for(lambda: not any(r.running for r in readers), "the native reader stopped with the session")
        assert not any(r in native_rx._live for r in readers)
    finally:
        await pc.close()
        for t in (player.audio, player.video):
            if t is not None:
                t.stop()
