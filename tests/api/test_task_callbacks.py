"""An egress task's own callback_url receives its status changes, signed like webhooks."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from plugins.webhook.signing import verify


async def test_egress_callback_url_receives_signed_status_events(make_node: Any, aiohttp_server: Any) -> None:
    received: list[tuple[dict[str, Any], str]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        assert verify("cb-key", body, request.headers["X-Mediagate-Signature"])
        received.append((json.loads(body), request.headers["X-Mediagate-Event"]))
        return web.json_response({"code": 0})

    app = web.Application()
    app.router.add_post("/cb", hook)
    server = await aiohttp_server(app)
    node = await make_node('plugins.webhook.key="cb-key"')
    async with TestClient(TestServer(node.app)) as client:
        token = (await (await client.post("/v1/auth/token", json={
            "access_key": "test_access", "secret_key": "test_secret_value"})).json())["token"]
        auth = {"Authorization": f"Bearer {token}"}
        await client.post("/v1/rooms", json={"room_id": "cb"}, headers=auth)
        await client.post("/v1/rooms/cb/ingress", headers=auth, json={"kind": "test", "identity": "t"})
        response = await client.post("/v1/rooms/cb/egress", headers=auth, json={
            "kind": "record", "callback_url": str(server.make_url("/cb"))})
        assert response.status == 201
        egress_id = (await response.json())["egress_id"]
        await asyncio.sleep(1.5)
        await client.delete(f"/v1/egress/{egress_id}", headers=auth)
        for _ in range(200):
            if any(name == "egress.ended" for _, name in received):
                break
            await asyncio.sleep(0.05)
    statuses = [body["data"]["status"] for body, _ in received]
    assert statuses == ["active", "ending", "complete"], statuses
    assert all(body["data"]["egress_id"] == egress_id and body["room_id"] == "cb" for body, _ in received)
