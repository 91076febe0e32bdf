"""CORS on the REST API: allowed origins get the headers and preflight answers; others none."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient, TestServer


async def test_rest_cors_for_listed_origins_only(make_node: Any) -> None:
    node = await make_node('http.cors_origins=["https://app.example"]')
    async with TestClient(TestServer(node.app)) as client:
        preflight = await client.options("/v1/rooms", headers={
            "Origin": "https://app.example", "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type"})
        assert preflight.status == 204
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://app.example"
        assert "Authorization" in preflight.headers["Access-Control-Allow-Headers"]
        refused = await client.get("/v1/rooms", headers={"Origin": "https://app.example"})
        assert refused.status == 401  # still authenticated; the browser may read the error
        assert refused.headers["Access-Control-Allow-Origin"] == "https://app.example"
        other = await client.options("/v1/rooms", headers={"Origin": "https://evil.example",
                                                           "Access-Control-Request-Method": "POST"})
        assert other.status == 403 and "Access-Control-Allow-Origin" not in other.headers


async def test_same_origin_by_default(client: TestClient) -> None:
    response = await client.get("/v1/rooms", headers={"Origin": "https://app.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
