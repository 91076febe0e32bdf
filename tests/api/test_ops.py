"""Operations: health, readiness, Prometheus metrics, nodes, the OpenAPI document and the docs page."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

from gateway import __version__
from gateway.node import Node

BUILTIN_PLUGINS = {"layouts", "record", "storage_local", "test_source", "webhook"}


async def test_healthz(client: TestClient) -> None:
    response = await client.get("/healthz")
    assert response.status == 200
    assert await response.json() == {"status": "ok"}


async def test_readyz(client: TestClient) -> None:
    response = await client.get("/readyz")
    assert response.status == 200
    assert await response.json() == {"status": "ok", "checks": {"started": True, "store": True}}


async def test_readyz_not_ready(client: TestClient, node: Node) -> None:
    node.ready = False
    try:
        response = await client.get("/readyz")
        assert response.status == 503
        body = await response.json()
        assert body == {"status": "unavailable", "checks": {"started": False, "store": True}}
    finally:
        node.ready = True


async def test_metrics(client: TestClient, api: Any) -> None:
    await api.create_room(room_id="m1")
    await api.create_room(room_id="m2")
    await api.add_test_participant("m1", "src")
    response = await client.get("/metrics")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    text = await response.text()
    assert re.search(r"^mediagate_rooms 2\.0$", text, re.M), text
    assert re.search(r'^mediagate_participants\{kind="test"\} 1\.0$', text, re.M)
    assert "# TYPE mediagate_loop_lag_seconds histogram" in text
    assert "mediagate_loop_lag_seconds_bucket" in text
    assert re.search(r'^mediagate_events_total\{event="room.created"\} 2\.0$', text, re.M)


async def test_nodes_needs_auth(client: TestClient, api: Any) -> None:
    await api.expect_error(await client.get("/v1/nodes"), 401, "missing_token")


async def test_nodes(client: TestClient, api: Any, node: Node) -> None:
    await api.create_room(room_id="n1")
    await api.add_test_participant("n1", "src")
    response = await client.get("/v1/nodes", headers=api.auth)
    assert response.status == 200
    body = await response.json()
    assert list(body) == ["nodes"] and len(body["nodes"]) == 1
    entry = body["nodes"][0]
    assert entry["node_id"] == node.node_id
    assert entry["version"] == __version__
    assert entry["rooms"] == 1 and entry["participants"] == 1
    assert set(entry["plugins"]) >= BUILTIN_PLUGINS
    assert entry["url"] == node.public_url()
    assert {"cpu_count", "load1", "loop_lag_p99_ms", "uptime_s"} <= set(entry["load"])


def _refs(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["$ref"]] if isinstance(value.get("$ref"), str) else []
        return found + [ref for child in value.values() for ref in _refs(child)]
    if isinstance(value, list):
        return [ref for child in value for ref in _refs(child)]
    return []


async def test_openapi_document(client: TestClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status == 200
    doc = await response.json()
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] == "mediagate" and doc["info"]["version"] == __version__
    paths = doc["paths"]
    for path in ("/v1/rooms", "/v1/rooms/{room_id}", "/v1/rooms/{room_id}/layout", "/v1/files",
                 "/v1/auth/token", "/v1/rooms/{room_id}/participants/{participant_id}"):
        assert path in paths, sorted(paths)
    assert set(paths["/v1/rooms"]) == {"get", "post"}
    assert set(paths["/v1/rooms/{room_id}/layout"]) == {"get", "put"}
    schemas = doc["components"]["schemas"]
    assert "RoomCreate" in schemas and "Layout" in schemas and "ErrorBody" in schemas
    assert "room_id" in schemas["RoomCreate"]["properties"]
    create = paths["/v1/rooms"]["post"]
    assert create["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/RoomCreate"}
    assert {"201", "400", "401", "403", "409"} <= set(create["responses"])
    # structurally valid: every $ref resolves, every operation has responses and declares its path params
    for ref in _refs(doc):
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in schemas, ref
    operation_ids = []
    for path, item in paths.items():
        declared = set(re.findall(r"{(\w+)}", path))
        for method, op in item.items():
            assert method in {"get", "put", "post", "delete", "patch"}, (path, method)
            assert op["responses"], (path, method)
            params = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert params == declared, (path, method)
            operation_ids.append(op["operationId"])
    assert len(operation_ids) == len(set(operation_ids)), "operationIds must be unique"
    assert doc["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "security" not in paths["/v1/auth/token"]["post"]
    assert paths["/v1/rooms"]["get"]["security"] == [{"bearer": []}, {"basic": []}]


async def test_docs_page(client: TestClient) -> None:
    response = await client.get("/docs")
    assert response.status == 200
    assert response.headers["Content-Type"].startswith("text/html")
    text = await response.text()
    assert "<html" in text.lower() and "swagger" in text.lower()
    assert "/openapi.json" in text or "swagger.json" in text


async def test_unknown_route_is_json_404(client: TestClient, api: Any) -> None:
    response = await client.get("/v1/nothing-here", headers=api.auth)
    await api.expect_error(response, 404, "not_found")
    response = await client.put("/v1/rooms", headers=api.auth)
    await api.expect_error(response, 405, "method_not_allowed")
    assert "GET" in response.headers["Allow"] and "POST" in response.headers["Allow"]
