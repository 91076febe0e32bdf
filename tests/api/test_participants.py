"""Participants: listing with tracks, PATCH (setnick/setrole/setstate over REST), kick."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from gateway.node import Node

PARTICIPANT_FIELDS = {"participant_id", "identity", "name", "kind", "role", "state", "permissions", "audio_muted",
                      "video_muted", "forward_audio", "forward_video", "joined_at", "metadata", "tracks"}
TRACK_FIELDS = {"track_id", "kind", "source", "codec", "muted", "width", "height"}


async def _room_with_source(api: Any) -> tuple[str, str, dict[str, Any]]:
    await api.create_room(room_id="r")
    ingress = await api.add_test_participant("r", "src", name="Source")
    return "r", ingress["participant_id"], ingress


def _tracks(participant: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["kind"]: t for t in participant["tracks"]}


async def test_list_participants_with_tracks(client: TestClient, api: Any) -> None:
    room_id, pid, _ = await _room_with_source(api)
    assert pid.startswith("PA_")
    listed = await api.participants(room_id)
    assert len(listed) == 1
    participant = listed[0]
    assert set(participant) == PARTICIPANT_FIELDS
    assert participant["participant_id"] == pid
    assert (participant["identity"], participant["name"], participant["kind"]) == ("src", "Source", "test")
    assert participant["state"] == 0xF and participant["role"] == 0x2
    assert (participant["audio_muted"], participant["video_muted"], participant["forward_audio"],
            participant["forward_video"]) == (False, False, True, True)
    assert len(participant["tracks"]) == 2
    for track in participant["tracks"]:
        assert set(track) == TRACK_FIELDS
        assert isinstance(track["track_id"], str) and track["track_id"]
        assert isinstance(track["codec"], str) and track["codec"]
        assert track["muted"] is False
    tracks = _tracks(participant)
    assert set(tracks) == {"audio", "video"}
    assert tracks["audio"]["source"] == "mic"
    assert tracks["video"]["source"] == "camera"
    assert tracks["audio"]["track_id"] != tracks["video"]["track_id"]
    room = await api.room(room_id)
    assert room["participants"] == listed and room["participant_count"] == 1


async def test_list_participants_missing_room(client: TestClient, api: Any) -> None:
    response = await client.get("/v1/rooms/ghost/participants", headers=api.auth)
    await api.expect_error(response, 404, "room_not_found", "room_id")


async def test_audio_only_source_has_one_track(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="r")
    ingress = await api.add_test_participant("r", "voice", audio_only=True)
    participant = await api.participant("r", ingress["participant_id"])
    assert [(t["kind"], t["source"]) for t in participant["tracks"]] == [("audio", "mic")]


async def _patch(client: TestClient, api: Any, room_id: str, pid: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await client.patch(f"/v1/rooms/{room_id}/participants/{pid}", json=body, headers=api.auth)
    assert response.status == 200, await response.text()
    data = await response.json()
    assert data == await api.participant(room_id, pid)  # the answer is the stored state
    return data


async def test_patch_name_and_role(client: TestClient, api: Any, event_log: Any) -> None:
    room_id, pid, _ = await _room_with_source(api)
    log = event_log(room_id)
    data = await _patch(client, api, room_id, pid, {"name": "张三 camera"})
    assert data["name"] == "张三 camera" and data["identity"] == "src"
    data = await _patch(client, api, room_id, pid, {"role": 0x6})
    assert data["role"] == 0x6 and data["name"] == "张三 camera"
    updates = log.named("participant.updated")
    assert [sorted(e.data["changes"]) for e in updates] == [["name"], ["role"]]
    assert updates[-1].data["participant"]["role"] == 0x6


async def test_patch_state_bits_and_track_mutes(client: TestClient, api: Any) -> None:
    room_id, pid, _ = await _room_with_source(api)

    async def check(body: dict[str, Any], state: int, audio_track_muted: bool, video_track_muted: bool) -> None:
        data = await _patch(client, api, room_id, pid, body)
        assert data["state"] == state, (body, hex(data["state"]))
        assert data["audio_muted"] is not bool(state & 0x8)
        assert data["video_muted"] is not bool(state & 0x4)
        assert data["forward_audio"] is bool(state & 0x2)
        assert data["forward_video"] is bool(state & 0x1)
        tracks = _tracks(data)
        assert tracks["audio"]["muted"] is audio_track_muted, (body, tracks)
        assert tracks["video"]["muted"] is video_track_muted, (body, tracks)

    await check({"audio_muted": True}, 0x7, True, False)
    await check({"forward_video": False}, 0x6, True, True)
    await check({"audio_muted": False, "forward_video": True}, 0xF, False, False)
    await check({"forward_audio": False}, 0xD, True, False)
    await check({"video_muted": True}, 0x9, True, True)
    await check({"video_muted": False, "forward_audio": True}, 0xF, False, False)
    # an empty patch changes nothing
    await check({}, 0xF, False, False)


async def test_patch_rejections_change_nothing(client: TestClient, api: Any) -> None:
    room_id, pid, _ = await _room_with_source(api)
    before = await api.participant(room_id, pid)
    cases = [({"nickname": "x"}, "nickname"), ({"role": 256}, "role"), ({"role": "owner"}, "role"),
             ({"audio_muted": "yes please"}, "audio_muted"), ({"name": "n" * 129}, "name")]
    for body, field in cases:
        response = await client.patch(f"/v1/rooms/{room_id}/participants/{pid}", json=body, headers=api.auth)
        await api.expect_error(response, 400, "validation_error", field)
    assert await api.participant(room_id, pid) == before


async def test_patch_by_identity(client: TestClient, api: Any) -> None:
    room_id, pid, _ = await _room_with_source(api)
    response = await client.patch(f"/v1/rooms/{room_id}/participants/src", json={"name": "by identity"},
                                  headers=api.auth)
    assert response.status == 200
    assert (await response.json())["participant_id"] == pid
    assert (await api.participant(room_id, pid))["name"] == "by identity"


async def test_unknown_participant(client: TestClient, api: Any) -> None:
    room_id, pid, _ = await _room_with_source(api)
    response = await client.patch(f"/v1/rooms/{room_id}/participants/PA_nobody", json={"name": "x"},
                                  headers=api.auth)
    await api.expect_error(response, 404, "participant_not_found", "participant_id")
    response = await client.delete(f"/v1/rooms/{room_id}/participants/PA_nobody", headers=api.auth)
    await api.expect_error(response, 404, "participant_not_found", "participant_id")
    response = await client.patch(f"/v1/rooms/ghost/participants/{pid}", json={"name": "x"}, headers=api.auth)
    await api.expect_error(response, 404, "room_not_found", "room_id")
    assert [p["participant_id"] for p in await api.participants(room_id)] == [pid]


async def test_kick_test_source(client: TestClient, api: Any, event_log: Any, node: Node) -> None:
    room_id, pid, _ = await _room_with_source(api)
    other = await api.add_test_participant(room_id, "other")
    log = event_log(room_id)
    response = await client.delete(f"/v1/rooms/{room_id}/participants/{pid}", headers=api.auth)
    assert response.status == 204
    assert [p["participant_id"] for p in await api.participants(room_id)] == [other["participant_id"]]
    left = log.named("participant.left")
    assert [(e.data["participant_id"], e.data["reason"]) for e in left] == [(pid, "kicked")]
    unpublished = {e.data["track"]["kind"] for e in log.named("track.unpublished")
                   if e.data["participant_id"] == pid}
    await api.wait_until(lambda: _unpublished(log, pid, unpublished), "the kicked source's tracks unpublished")
    response = await client.delete(f"/v1/rooms/{room_id}/participants/{pid}", headers=api.auth)
    await api.expect_error(response, 404, "participant_not_found", "participant_id")


async def _unpublished(log: Any, pid: str, seen: set[str]) -> bool:
    seen |= {e.data["track"]["kind"] for e in log.named("track.unpublished") if e.data["participant_id"] == pid}
    log.events.clear()
    return seen == {"audio", "video"}


async def test_kick_ends_the_ingress(client: TestClient, api: Any) -> None:
    """API.md: kicking a participant 'stops players' -- the ingress that brought it in must end."""
    room_id, pid, ingress = await _room_with_source(api)
    response = await client.delete(f"/v1/rooms/{room_id}/participants/{pid}", headers=api.auth)
    assert response.status == 204

    async def ended() -> bool:
        task = await (await client.get(f"/v1/ingress/{ingress['ingress_id']}", headers=api.auth)).json()
        return task["status"] not in ("starting", "publishing")

    await api.wait_until(ended, "the kicked participant's ingress task ended", timeout=20)


async def test_kick_websocket_participant(client: TestClient, api: Any, connect: Any) -> None:
    await api.create_room(room_id="r")
    socket = await connect("r", await api.join_token("r", "alice"))
    pid = socket.seen[0]["participant_id"]
    response = await client.delete(f"/v1/rooms/r/participants/{pid}", headers=api.auth)
    assert response.status == 204
    messages, code = await socket.closed()
    assert {"type": "closed", "reason": "kicked"} in messages
    assert code == 4000
    assert await api.participants("r") == []
