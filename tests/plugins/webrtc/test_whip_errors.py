"""WHIP/WHEP bad input and resource limits: every refusal is a clear 4xx (or 503), never a 500,
and the node keeps serving."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path

from aiortc import RTCSessionDescription

from gateway.security import Permission
from tests.api.conftest import EventLog
from tests.e2e.helpers import REPO
from tests.plugins.webrtc.clients import Publisher, post_sdp
from tests.plugins.webrtc.conftest import Rtc, wait_for


async def error(status_body: tuple[int, object, str], status: int, code: str) -> None:
    got, _, body = status_body
    assert got == status, body
    assert f'"code": "{code}"' in body, body


async def test_refusals(rtc: Rtc, green_ts: Path) -> None:
    room = (await rtc.api.create_room(room_id="errs"))["room_id"]
    await rtc.api.create_room(room_id="other")
    token = await rtc.api.join_token(room, "alice")
    url = f"{rtc.url}/whip/{room}"
    publisher = Publisher(green_ts)
    offer = await publisher.offer()
    await publisher.close()

    await error(await post_sdp(url, offer, None), 401, "missing_token")
    await error(await post_sdp(url, offer, "not-a-token"), 401, "invalid_token")
    await error(await post_sdp(url, offer, await rtc.api.join_token("other", "alice")), 403, "wrong_room")
    no_video = await rtc.api.join_token(room, "bob", permissions=int(Permission.ENTER | Permission.SEND_AUDIO))
    await error(await post_sdp(url, offer, no_video), 403, "permission_denied")
    await error(await post_sdp(url, "hello, I am not SDP", token), 400, "bad_sdp")
    await error(await post_sdp(url, "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=video x RTP\r\n", token), 400, "bad_sdp")
    unknown_codecs = re.sub(r"a=rtpmap:(\d+) [^/\r]+/", r"a=rtpmap:\1 X-NONE/", offer)
    status, _, body = await post_sdp(url, unknown_codecs, token)
    assert status == 406 and "no_usable_codec" in body and "X-NONE".lower() in body.lower(), body
    await error(await post_sdp(f"{rtc.url}/whip/nosuchroom", offer, await rtc.api.join_token(room, "c")), 403,
                "wrong_room")
    response = await rtc.client.post(f"/whip/{room}", data=offer, headers={"Authorization": f"Bearer {token}",
                                                               "Content-Type": "application/json"})
    assert response.status == 415
    response = await rtc.client.delete("/webrtc/sessions/nope", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 404 and (await response.json())["error"]["code"] == "session_not_found"
    # WHEP: a token without the receive bits may not play
    deaf = await rtc.api.join_token(room, "deaf", permissions=int(Permission.ENTER | Permission.SEND_VIDEO))
    viewer_offer = offer.replace("a=sendonly", "a=recvonly")
    await error(await post_sdp(f"{rtc.url}/whep/{room}", viewer_offer, deaf), 403, "permission_denied")
    assert (await rtc.client.get("/health")).status in (200, 404)  # still serving
    assert (await rtc.client.get("/v1/rooms", headers=rtc.api.auth)).status == 200


async def test_options_patch_and_cors(make_node: object) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from tests.plugins.webrtc.conftest import LOOPBACK

    node = await make_node(*LOOPBACK, 'plugins.webrtc.cors_origins=["https://studio.example"]',  # type: ignore[operator]
                           'plugins.webrtc.ice_servers=[{urls=["stun:stun.example:3478"]}]')
    async with TestClient(TestServer(node.app)) as client:
        response = await client.options("/whip/any", headers={"Origin": "https://studio.example",
                                                             "Access-Control-Request-Method": "POST"})
        assert response.status == 204
        assert response.headers["Access-Control-Allow-Origin"] == "https://studio.example"
        assert "Authorization" in response.headers["Access-Control-Allow-Headers"]
        assert "Location" in response.headers["Access-Control-Expose-Headers"]
        assert response.headers.getall("Link") == ['<stun:stun.example:3478>; rel="ice-server"']
        other = await client.options("/whip/any", headers={"Origin": "https://evil.example"})
        assert "Access-Control-Allow-Origin" not in other.headers
        refused = await client.post("/whip/any", data="v=0", headers={"Origin": "https://studio.example"})
        assert refused.status == 401 and refused.headers["Access-Control-Allow-Origin"] == "https://studio.example"
        response = await client.patch("/webrtc/sessions/none", data="a=candidate")
        assert response.status == 404


async def test_trickle_patch_and_ingress_bearer_publishes(rtc: Rtc, green_ts: Path) -> None:
    room = (await rtc.api.create_room(room_id="ingress"))["room_id"]
    response = await rtc.client.post(f"/v1/rooms/{room}/ingress", json={"kind": "whip", "identity": "obs"},
                                     headers=rtc.api.auth)
    assert response.status == 201, await response.text()
    ingress = await response.json()
    assert ingress["whip_url"] == f"{rtc.url}/whip/{room}" and ingress["bearer_token"]
    bearer = {"Authorization": f"Bearer {ingress['bearer_token']}"}
    publisher = Publisher(green_ts)
    try:
        # a trickling client: the offer without candidates, which follow in a PATCH
        offer = await publisher.offer()
        lines = offer.split("\r\n")
        candidates = [line for line in lines if line.startswith("a=candidate:")]
        bare = "\r\n".join(line for line in lines if not line.startswith(("a=candidate:", "a=end-of-candidates")))
        status, headers, answer = await post_sdp(f"{rtc.url}/whip/{room}", bare, ingress["bearer_token"])
        assert status == 201, answer
        location, etag = headers["Location"], headers["ETag"]
        session = next(iter(rtc.plugin.registry.sessions.values()))
        ice_transport = session.pc.getTransceivers()[0].receiver.transport.transport
        assert ice_transport.getRemoteCandidates() == []
        ufrag = next(line for line in lines if line.startswith("a=ice-ufrag:"))
        pwd = next(line for line in lines if line.startswith("a=ice-pwd:"))
        mid = next(line for line in lines if line.startswith("a=mid:"))
        frag = "\r\n".join([ufrag, pwd, "m=audio 9 UDP/TLS/RTP/SAVPF 0", mid, *candidates,
                             "a=end-of-candidates", ""])
        sdpfrag = {"Content-Type": "application/trickle-ice-sdpfrag", **bearer}
        wrong = await rtc.client.patch(location, data=frag, headers={**sdpfrag, "If-Match": '"stale"'})
        assert wrong.status == 412
        restart = frag.replace(ufrag, "a=ice-ufrag:newfrag")
        refused = await rtc.client.patch(location, data=restart, headers={**sdpfrag, "If-Match": "*"})
        assert refused.status == 422 and (await refused.json())["error"]["code"] == "ice_restart_unsupported"
        not_frag = await rtc.client.patch(location, data=frag, headers={"Content-Type": "application/sdp", **bearer})
        assert not_frag.status == 415
        stranger = await rtc.client.patch(location, data=frag, headers={
            "Content-Type": "application/trickle-ice-sdpfrag",
            "Authorization": f"Bearer {await rtc.api.join_token(room, 'mallory')}"})
        assert stranger.status == 403
        response = await rtc.client.patch(location, data=frag, headers={**sdpfrag, "If-Match": etag})
        assert response.status == 204, await response.text()
        assert len(ice_transport.getRemoteCandidates()) == len(candidates) > 0
        await publisher.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        await wait_for(lambda: session.connected_at is not None, "the trickled session connected")
        await wait_for(lambda: any(f.packets for f in session.feeds), "media arrived")
        described = await (await rtc.client.get(f"/v1/ingress/{ingress['ingress_id']}", headers=rtc.api.auth)).json()
        assert described["state"] == "publishing" and described["participant_id"]
        assert [p["kind"] for p in await rtc.api.participants(room)] == ["whip"]
        stopped = await rtc.client.delete(f"/v1/ingress/{ingress['ingress_id']}", headers=rtc.api.auth)
        assert (await stopped.json())["status"] == "complete"
        await wait_for(lambda: not rtc.node.rooms.rooms[room].participants, "the publisher left")
    finally:
        await publisher.close()


async def test_vanished_publisher_leaves_after_consent_timeout(rtc: Rtc, green_ts: Path) -> None:
    room = (await rtc.api.create_room(room_id="vanish"))["room_id"]
    events = EventLog(rtc.node, room)
    token = await rtc.api.join_token(room, "ghost")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.plugins.webrtc.vanishing_publisher", rtc.url, room, token, str(green_ts),
        cwd=REPO, stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 60)).decode()
        assert line.startswith("201 /webrtc/sessions/"), line
        await wait_for(lambda: rtc.plugin.registry.sessions and all(
            s.connected_at for s in rtc.plugin.registry.sessions.values()), "the publisher connected")
        proc.kill()  # no DELETE, no DTLS close_notify: only consent checks notice
        left = await wait_for(lambda: events.named("participant.left"), "participant.left", timeout=60)
        assert left[0].data["identity"] == "ghost" and left[0].data["reason"] in ("ice_failed", "peer_closed")
        assert rtc.plugin.registry.sessions == {}
    finally:
        events.close()
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def test_fifty_offers_at_once(rtc: Rtc, green_ts: Path) -> None:
    room = (await rtc.api.create_room(room_id="flood"))["room_id"]
    publisher = Publisher(green_ts)
    offer = await publisher.offer()
    await publisher.close()
    operator = rtc.api.auth["Authorization"].split()[1]
    results = await asyncio.gather(*[post_sdp(f"{rtc.url}/whip/{room}?identity=w{i}", offer, operator)
                                     for i in range(50)])
    statuses = [status for status, _, _ in results]
    assert set(statuses) <= {201, 503}, statuses
    assert statuses.count(201) >= 1
    for status, headers, body in results:
        if status == 503:
            assert headers["Retry-After"] and '"code"' in body
    assert (await rtc.client.get("/v1/rooms", headers=rtc.api.auth)).status == 200
    assert len(rtc.plugin.registry.sessions) == statuses.count(201)
