"""Uploads: multipart POST /v1/files with type and size checks, metadata, download, list, delete."""

from __future__ import annotations

import hashlib
import io
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiohttp import FormData
from aiohttp.test_utils import TestClient
from PIL import Image

from gateway.node import Node

FILE_FIELDS = {"file_id", "name", "size", "content_type", "sha256", "created_at", "url", "media_info"}


def png_bytes(width: int = 64, height: int = 48, noise: bool = False) -> bytes:
    if noise:
        pixels = np.random.default_rng(7).integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        pixels = np.zeros((height, width, 3), dtype=np.uint8)
        pixels[:, : width // 2] = (255, 0, 0)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def mp4_bytes(tmp_path: Path, frames: int = 10, fps: int = 10) -> bytes:
    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for index in range(frames):
            rgb = np.full((120, 160, 3), (index * 20) % 256, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path.read_bytes()


def form(filename: str, data: bytes, content_type: str = "application/octet-stream") -> FormData:
    body = FormData()
    body.add_field("file", data, filename=filename, content_type=content_type)
    return body


def stored_files(node: Node) -> list[str]:
    directory = Path(node.config.files_dir)
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


async def upload(client: TestClient, auth: dict[str, str], filename: str, data: bytes) -> Any:
    return await client.post("/v1/files", data=form(filename, data), headers=auth)


async def test_png_upload_download_list_delete(client: TestClient, api: Any, node: Node) -> None:
    data = png_bytes(64, 48)
    response = await upload(client, api.auth, "logo.png", data)
    assert response.status == 201, await response.text()
    info = await response.json()
    assert set(info) == FILE_FIELDS
    file_id = info["file_id"]
    assert file_id.startswith("FI_")
    assert info["name"] == "logo.png" and info["size"] == len(data) and info["content_type"] == "image/png"
    assert info["sha256"] == hashlib.sha256(data).hexdigest()
    assert info["media_info"]["width"] == 64 and info["media_info"]["height"] == 48
    assert info["media_info"]["has_video"] is False and info["media_info"]["format"] == "png"
    assert info["url"] == f"{node.public_url()}/v1/files/{file_id}/content"

    meta = await client.get(f"/v1/files/{file_id}", headers=api.auth)
    assert meta.status == 200
    assert await meta.json() == info

    content = await client.get(f"/v1/files/{file_id}/content", headers=api.auth)
    assert content.status == 200
    assert content.headers["Content-Type"].startswith("image/png")
    assert await content.read() == data

    listing = await client.get("/v1/files", headers=api.auth)
    assert listing.status == 200
    assert await listing.json() == {"files": [info]}

    response = await client.delete(f"/v1/files/{file_id}", headers=api.auth)
    assert response.status == 204
    for path in (f"/v1/files/{file_id}", f"/v1/files/{file_id}/content"):
        await api.expect_error(await client.get(path, headers=api.auth), 404, "file_not_found", "file_id")
    await api.expect_error(await client.delete(f"/v1/files/{file_id}", headers=api.auth), 404, "file_not_found",
                           "file_id")
    assert await (await client.get("/v1/files", headers=api.auth)).json() == {"files": []}
    assert stored_files(node) == []


async def test_upload_needs_operator(client: TestClient, api: Any, node: Node) -> None:
    response = await client.post("/v1/files", data=form("a.png", png_bytes()))
    await api.expect_error(response, 401, "missing_token")
    await api.create_room(room_id="r")
    token = await api.join_token("r", "alice")
    response = await client.post("/v1/files", data=form("a.png", png_bytes()),
                                 headers={"Authorization": f"Bearer {token}"})
    await api.expect_error(response, 403, "operator_only")
    assert stored_files(node) == []


async def test_oversize_upload(make_node: Any, client_for: Any, api: Any) -> None:
    small = await make_node("files.max_size_mb=0.01")  # 10 KiB
    small_client = await client_for(small)
    headers = {"Authorization": f"Bearer {small.tokens.api_token('test_access', 600)[0]}"}
    data = png_bytes(100, 80, noise=True)  # noise does not compress: ~24 KiB
    assert len(data) > small.files.max_bytes
    response = await upload(small_client, headers, "big.png", data)
    await api.expect_error(response, 413, "file_too_large", "file")
    assert stored_files(small) == []
    # far beyond the limit: refused from Content-Length before reading
    huge = png_bytes(400, 300, noise=True)
    response = await upload(small_client, headers, "huge.png", huge)
    await api.expect_error(response, 413, "file_too_large", "file")
    assert stored_files(small) == []
    assert await (await small_client.get("/v1/files", headers=headers)).json() == {"files": []}
    # a small one still fits
    response = await upload(small_client, headers, "ok.png", png_bytes(8, 8))
    assert response.status == 201


async def test_wrong_type(client: TestClient, api: Any, node: Node) -> None:
    response = await upload(client, api.auth, "setup.exe", b"MZ\x90\x00" + b"\x00" * 100)
    await api.expect_error(response, 415, "unsupported_type", "file")
    response = await upload(client, api.auth, "noextension", png_bytes())
    await api.expect_error(response, 415, "unsupported_type", "file")
    assert stored_files(node) == []
    assert await (await client.get("/v1/files", headers=api.auth)).json() == {"files": []}


async def test_type_mismatch(client: TestClient, api: Any, node: Node) -> None:
    response = await upload(client, api.auth, "fake.png", b"this is plain text, not a picture\n" * 10)
    await api.expect_error(response, 415, "type_mismatch", "file")
    response = await upload(client, api.auth, "fake.mp4", png_bytes())
    await api.expect_error(response, 415, "type_mismatch", "file")
    response = await upload(client, api.auth, "empty.png", b"")
    await api.expect_error(response, 415, "empty_file", "file")
    assert stored_files(node) == []
    assert await (await client.get("/v1/files", headers=api.auth)).json() == {"files": []}


async def test_not_multipart_and_missing_field(client: TestClient, api: Any, node: Node) -> None:
    response = await client.post("/v1/files", data=png_bytes(), headers={**api.auth, "Content-Type": "image/png"})
    await api.expect_error(response, 415, "not_multipart", "file")
    body = FormData()
    body.add_field("other", png_bytes(), filename="a.png", content_type="image/png")
    response = await client.post("/v1/files", data=body, headers=api.auth)
    await api.expect_error(response, 400, "missing_file", "file")
    assert stored_files(node) == []


async def test_mp4_upload_media_info(client: TestClient, api: Any, tmp_path: Path) -> None:
    data = mp4_bytes(tmp_path, frames=10, fps=10)
    response = await upload(client, api.auth, "clip.mp4", data)
    assert response.status == 201, await response.text()
    info = await response.json()
    media = info["media_info"]
    assert info["content_type"] == "video/mp4"
    assert media["has_video"] is True and media["has_audio"] is False
    assert (media["width"], media["height"]) == (160, 120)
    assert media["video_codec"] == "h264"
    assert 800 <= media["duration_ms"] <= 1200, media  # 10 frames at 10 fps
    content = await client.get(f"/v1/files/{info['file_id']}/content", headers=api.auth)
    assert await content.read() == data


async def test_hostile_filename_is_stored_safely_and_served_encoded(client, auth, tmp_path) -> None:
    import io
    import urllib.parse

    import aiohttp
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buffer, format="PNG")
    form = aiohttp.FormData()
    form.add_field("file", buffer.getvalue(), filename='../../evil "name"\\x.png', content_type="image/png")
    response = await client.post("/v1/files", data=form, headers=auth)
    assert response.status == 201, await response.text()
    info = await response.json()
    download = await client.get(f"/v1/files/{info['file_id']}/content", headers=auth)
    assert download.status == 200 and await download.read() == buffer.getvalue()
    disposition = download.headers["Content-Disposition"]
    assert disposition.startswith("attachment; filename*=UTF-8''") and '"' not in disposition
    assert urllib.parse.unquote(disposition.split("''", 1)[1]).endswith(".png")
