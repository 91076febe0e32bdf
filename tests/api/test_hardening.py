"""Fuzzed and hostile input gets a 4xx naming the field, never a 500 (issue 6, items 6 and 7):
malformed multipart, huge integers, deep JSON, NaN, loose booleans, bogus images and
decompression bombs, non-UTF-8 filenames, empty bodies, empty text commands."""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from PIL import Image

from gateway.node import Node
from tests.api.test_files import form, png_bytes, stored_files

BOUNDARY = "xYzBoundary"


def multipart(raw_part: bytes) -> tuple[bytes, dict[str, str]]:
    body = f"--{BOUNDARY}\r\n".encode() + raw_part + f"\r\n--{BOUNDARY}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (a decompression bomb needs no more to be refused)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + \
        chunk(b"IEND", b"")


def image_bytes(fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (0, 200, 0)).save(out, format=fmt)
    return out.getvalue()


async def post_raw(client: TestClient, auth: dict[str, str], raw_part: bytes) -> Any:
    body, headers = multipart(raw_part)
    return await client.post("/v1/files", data=body, headers={**auth, **headers})


@pytest.mark.parametrize("raw_part", [
    b'Content-Disposition: form-data; name="file"; filename="a.png"\x00\r\n\r\nxx',  # NUL in a header
    b'Content-Disposition: form-data; name="file"; filename="a.png"\r\nX-\x01bad: \x7f\r\n\r\nxx',  # controls
    b"\r\nxx",  # a part with no headers at all
    b'Content-Disposition form-data name file\r\n\r\nxx',  # a header line without a colon
])
async def test_malformed_multipart_parts_are_400_naming_the_file(api: Any, client: TestClient, node: Node,
                                                                 raw_part: bytes) -> None:
    response = await post_raw(client, api.auth, raw_part)
    assert response.status in (400, 415), await response.text()
    code, field = api.error_of(await response.json())
    assert field == "file" and code in ("malformed_multipart", "missing_file", "missing_filename", "unknown_field",
                                        "unsupported_type", "type_mismatch"), code
    assert stored_files(node) == []


async def test_multipart_without_boundary_is_400(api: Any, client: TestClient) -> None:
    response = await client.post("/v1/files", data=b"--x\r\n\r\n--x--", headers={
        **api.auth, "Content-Type": "multipart/form-data"})
    await api.expect_error(response, 400, "malformed_multipart", "file")


async def test_non_utf8_filename_is_400_and_leaves_no_file(api: Any, client: TestClient, node: Node) -> None:
    raw = b'Content-Disposition: form-data; name="file"; filename="\xff\xfe\xc3(.png"\r\n' \
          b"Content-Type: image/png\r\n\r\n" + png_bytes()
    response = await post_raw(client, api.auth, raw)
    await api.expect_error(response, 400, "bad_filename", "file")
    assert stored_files(node) == []
    assert await node.store.list_files() == []


async def test_row_and_file_exist_together_or_not_at_all(api: Any, client: TestClient, node: Node,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken_insert(row: dict[str, Any]) -> None:
        raise RuntimeError("store is down")
    monkeypatch.setattr(node.store, "add_file", broken_insert)
    response = await client.post("/v1/files", data=form("a.png", png_bytes()), headers=api.auth)
    assert response.status == 500
    assert stored_files(node) == []


@pytest.mark.parametrize(("name", "data", "code"), [
    ("cut.png", png_bytes(640, 480, noise=True)[:2000], "unreadable_media"),  # truncated
    ("bogus.png", b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20, "unreadable_media"),
    ("cut.gif", image_bytes("GIF")[:40], "unreadable_media"),
    ("bogus.gif", b"GIF89a" + b"\xff" * 30, "unreadable_media"),
    ("cut.bmp", image_bytes("BMP")[:60], "unreadable_media"),
    ("bogus.bmp", b"BM" + b"\x00" * 60, "unreadable_media"),
    ("bomb.png", png_header_only(20000, 20000), "image_too_large"),  # past Pillow's own limit
    ("big.png", png_header_only(9000, 9000), "image_too_large"),  # past ours, under Pillow's
])
async def test_bad_images_and_decompression_bombs_are_400(api: Any, client: TestClient, node: Node, name: str,
                                                          data: bytes, code: str) -> None:
    response = await client.post("/v1/files", data=form(name, data), headers=api.auth)
    await api.expect_error(response, 400, code, "file")
    assert stored_files(node) == []


@pytest.mark.parametrize("method", ["POST", "PATCH"])
async def test_integers_past_int64_are_400_naming_the_field(api: Any, client: TestClient, method: str) -> None:
    await api.create_room(room_id="big")
    path = "/v1/rooms" if method == "POST" else "/v1/rooms/big"
    for value in (2**63, 2**64 + 1, 10**30):
        body = {"max_participants": value, **({"room_id": "big2"} if method == "POST" else {})}
        response = await client.request(method, path, json=body, headers=api.auth)
        await api.expect_error(response, 400, "validation_error", "max_participants")
    response = await client.request(method, path, json={"empty_timeout_s": 2**63}, headers=api.auth)
    await api.expect_error(response, 400, "validation_error", "empty_timeout_s")


async def test_json_nested_50000_deep_is_400(api: Any, client: TestClient) -> None:
    for raw in ("[" * 50000 + "]" * 50000, '{"metadata": ' + '{"a": ' * 50000 + "1" + "}" * 50001):
        response = await client.post("/v1/rooms", data=raw, headers={**api.auth, "Content-Type": "application/json"})
        body = await api.expect_error(response, 400, "malformed_json")
        assert "nested" in body["error"]["message"]
    # a string full of brackets is not nesting
    response = await client.post("/v1/rooms", json={"topic": "[[[[{{{{" * 20}, headers=api.auth)
    assert response.status == 201, await response.text()


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_non_finite_numbers_are_refused_and_answers_are_json(api: Any, client: TestClient, number: str) -> None:
    raw = '{"room_id": "nan", "metadata": {"x": NUMBER}}'.replace("NUMBER", number)
    response = await client.post("/v1/rooms", data=raw, headers={**api.auth, "Content-Type": "application/json"})
    await api.expect_error(response, 400, "malformed_json")
    assert not await api.room_exists("nan")


async def test_served_documents_are_strict_json(api: Any, client: TestClient) -> None:
    await api.create_room(room_id="j", metadata={"big": 2**70, "f": 1.5})
    def refuse(name: str) -> None:
        pytest.fail(f"an answer holds {name}")
    for path in ("/v1/rooms/j", "/openapi.json", "/v1/rooms"):
        json.loads(await (await client.get(path, headers=api.auth)).text(), parse_constant=refuse)
    assert (await api.room("j"))["metadata"]["big"] == 2**70


@pytest.mark.parametrize(("body", "field"), [
    ({"locked": 0}, "locked"), ({"locked": "true"}, "locked"), ({"auto_record": 1}, "auto_record"),
    ({"max_participants": "5"}, "max_participants"), ({"max_participants": 5.5}, "max_participants"),
    ({"max_participants": True}, "max_participants"),
])
async def test_types_are_strict_as_the_schema_says(api: Any, client: TestClient, body: dict[str, Any],
                                                   field: str) -> None:
    response = await client.post("/v1/rooms", json={"room_id": "strict", **body}, headers=api.auth)
    await api.expect_error(response, 400, "validation_error", field)
    response = await client.post("/v1/rooms/x/join-tokens", json={"identity": "a", "permissions": False},
                                 headers=api.auth)
    await api.expect_error(response, 400, "validation_error", "permissions")


async def test_empty_body_on_a_required_body_is_400_and_changes_nothing(api: Any, client: TestClient) -> None:
    await api.create_room(room_id="lay")
    ok = await client.put("/v1/rooms/lay/layout", json={"template": "speaker"}, headers=api.auth)
    assert ok.status == 200, await ok.text()
    for path, method in (("/v1/rooms/lay/layout", "PUT"), ("/v1/rooms/lay", "PATCH"), ("/v1/rooms", "POST")):
        response = await client.request(method, path, headers=api.auth)
        await api.expect_error(response, 400, "missing_body")
    assert (await api.layout("lay"))["template"] == "speaker"
    # the body of lock is optional, and the schema says so
    response = await client.post("/v1/rooms/lay/lock", headers=api.auth)
    assert response.status == 200 and (await response.json())["locked"] is True
    spec = await (await client.get("/openapi.json")).json()
    assert spec["paths"]["/v1/rooms/{room_id}/lock"]["post"]["requestBody"]["required"] is False
    assert spec["paths"]["/v1/rooms/{room_id}/layout"]["put"]["requestBody"]["required"] is True


@pytest.mark.parametrize(("layout", "field"), [
    ({"template": ""}, "template"),
    ({"screen_template": ""}, "screen_template"),
    ({"watermarks": {"images": [{"file_id": "", "w": 10, "h": 10}]}}, "watermarks.images[0].file_id"),
    ({"canvas": {"background": {"color": "red"}}}, "canvas.background.color"),
    ({"template": "grid", "regions": [{"x": 0, "y": 0, "w": 10, "h": 10}]}, "regions"),
])
async def test_layout_refusals_name_the_field(api: Any, client: TestClient, layout: dict[str, Any],
                                              field: str) -> None:
    await api.create_room(room_id="lf")
    response = await client.put("/v1/rooms/lf/layout", json=layout, headers=api.auth)
    await api.expect_error(response, 400, "validation_error", field)


async def test_odd_canvas_is_rounded_as_the_schema_says(api: Any, client: TestClient) -> None:
    await api.create_room(room_id="odd")
    response = await client.put("/v1/rooms/odd/layout", json={"canvas": {"width": 641, "height": 361}},
                                headers=api.auth)
    assert response.status == 200, await response.text()
    canvas = (await response.json())["canvas"]
    assert (canvas["width"], canvas["height"]) == (640, 360)
    spec = await (await client.get("/openapi.json")).json()
    assert "rounded down to even" in spec["components"]["schemas"]["Canvas"]["properties"]["width"]["description"]


async def test_schema_types_colours_and_uses_portable_patterns(client: TestClient) -> None:
    spec = await (await client.get("/openapi.json")).json()
    schemas = spec["components"]["schemas"]
    assert schemas["Background"]["properties"]["color"]["pattern"] == "^#?[0-9A-Fa-f]{6}$"
    assert schemas["TextWatermark"]["properties"]["color"]["pattern"] == "^#?[0-9A-Fa-f]{6}$"
    patterns = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("pattern"), str):
                patterns.append(node["pattern"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
    walk(spec)
    assert patterns
    for pattern in patterns:  # escapes ECMA-262, Rust's regex and Python's re read differently
        assert "\\s" not in pattern and "\\d" not in pattern and "\\w" not in pattern, pattern


class FakeIngressKind:
    name = "fake_in"

    def validate(self, request: Any, node: Node) -> None:
        pass

    async def start(self, task: Any, request: Any, room: Any, node: Node) -> Any:
        raise NotImplementedError


class FakeEgressKind(FakeIngressKind):
    name = "fake_out"
    formats = ("fakefmt",)


class KindsPlugin:
    from gateway.hookspecs import hookimpl

    @hookimpl
    def mediagate_ingress_kinds(self, node: Node) -> list[Any]:
        return [FakeIngressKind()]

    @hookimpl
    def mediagate_egress_kinds(self, node: Node) -> list[Any]:
        return [FakeEgressKind()]


async def test_served_enums_come_from_the_loaded_plugins(make_node: Any, client_for: Any) -> None:
    node = await make_node(extra_plugins={"kinds": KindsPlugin()})
    client = await client_for(node)
    schemas = (await (await client.get("/openapi.json")).json())["components"]["schemas"]
    assert schemas["IngressRequest"]["properties"]["kind"]["enum"] == sorted(node.ingress.kinds)
    assert "fake_in" in node.ingress.kinds and "test" in node.ingress.kinds
    assert schemas["EgressRequest"]["properties"]["kind"]["enum"] == sorted(node.egress.kinds)
    assert {"fake_out", "record"} <= set(node.egress.kinds)
    assert schemas["StorageOptions"]["properties"]["backend"]["enum"] == sorted(node.storage.backends)
    declared = {f for kind in node.egress.kinds.values() for f in getattr(kind, "formats", ())}
    assert set(schemas["RecordOptions"]["properties"]["formats"]["items"]["enum"]) == declared
    assert {"fakefmt", "mp4", "hls"} <= declared
    templates = schemas["Layout"]["properties"]["template"]["enum"]
    assert "custom" in templates and "grid" in templates and set(templates) == {*node.media.templates.names(),
                                                                                  "custom"}


async def test_empty_text_commands_get_an_error_reply(api: Any, connect: Any) -> None:
    await api.create_room(room_id="ws")
    socket = await connect("ws", await api.join_token("ws", "alice"))
    for text in ("@", "@@@@", "@ ", '{"cmd": ' + "[" * 5000 + "]" * 5000 + "}"):
        reply = await socket.command(text)
        assert reply["type"] == "error" and reply["error"]["code"] != "internal_error", reply
        assert reply["error"]["field"] == "cmd", reply
    assert (await socket.command("sendtext hello"))["type"] == "result"


def test_the_helpers_build_what_they_claim(tmp_path: Path) -> None:
    path = tmp_path / "h.png"
    path.write_bytes(png_header_only(300, 200))
    with Image.open(path) as image:
        assert image.size == (300, 200)


async def test_a_form_field_besides_file_is_refused_and_nothing_kept(api: Any, client: TestClient,
                                                                     node: Node) -> None:
    from aiohttp import FormData

    for first in (True, False):
        body = FormData()
        if not first:
            body.add_field("note", "hello")
        body.add_field("file", png_bytes(), filename="a.png", content_type="image/png")
        if first:
            body.add_field("note", "hello")
        response = await client.post("/v1/files", data=body, headers=api.auth)
        await api.expect_error(response, 400, "unknown_field", "note")
    assert stored_files(node) == [] and await node.store.list_files() == []
