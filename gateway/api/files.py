"""Uploads: POST /v1/files (multipart, field ``file``), metadata, download, delete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import BodyPartReader, web

from gateway.api import NODE
from gateway.api.middleware import principal, require_operator
from gateway.api.routing import ApiRouter
from gateway.api.schemas import FileList, FileOut
from gateway.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

if TYPE_CHECKING:
    from gateway.node import Node

MULTIPART_SLACK = 64 * 1024  # boundaries and headers around the file itself


def _node(request: web.Request) -> Node:
    return request.app[NODE]


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while chunk := await part.read_chunk(256 * 1024):
        yield chunk


async def upload_file(request: web.Request) -> web.Response:
    """Upload a file (multipart/form-data, field 'file'); type and size are checked."""
    require_operator(request, "file.upload")
    node = _node(request)
    limit = node.files.max_bytes
    if request.content_length is not None and request.content_length > limit + MULTIPART_SLACK:
        raise PayloadTooLarge(f"file is larger than {limit // (1024 * 1024)} MB", code="file_too_large",
                              field="file")
    if not request.content_type.startswith("multipart/"):
        raise UnsupportedMediaType("send multipart/form-data with the file in field 'file'",
                                   code="not_multipart", field="file")
    reader = await request.multipart()
    while True:
        part = await reader.next()
        if part is None:
            raise BadRequest("no 'file' field in the form", code="missing_file", field="file")
        if isinstance(part, BodyPartReader) and part.name == "file":
            if not part.filename:
                raise BadRequest("the 'file' field has no filename", code="missing_filename", field="file")
            info = await node.files.save_stream(part.filename, _chunks(part), owner=principal(request).subject)
            node.events.emit("upload.done", None, file_id=info["file_id"], name=info["name"], size=info["size"])
            return web.json_response(info, status=201)
        if isinstance(part, BodyPartReader):
            await part.release()  # another form field: skip it


async def list_files(request: web.Request) -> dict[str, Any]:
    require_operator(request, "file.list")
    node = _node(request)
    return {"files": [node.files.describe(row) for row in await node.store.list_files()]}


async def get_file(request: web.Request) -> dict[str, Any]:
    require_operator(request, "file.read")
    node = _node(request)
    return node.files.describe(await node.files.get(request.match_info["file_id"]))


async def download_file(request: web.Request) -> web.FileResponse:
    require_operator(request, "file.read")
    node = _node(request)
    row = await node.files.get(request.match_info["file_id"])
    response = web.FileResponse(node.files.path(row))
    response.content_type = row["content_type"]
    # RFC 6266 filename*: an uploaded name may hold quotes, non-ASCII or control characters
    response.headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(row['name'], safe='')}"
    return response


async def delete_file(request: web.Request) -> None:
    require_operator(request, "file.delete")
    await _node(request).files.delete(request.match_info["file_id"])


def register(router: ApiRouter) -> None:
    tags = ("files",)
    router.add("POST", "/v1/files", upload_file, response=FileOut, status=201, tags=tags, errors=(400, 413, 415),
               request_content={"multipart/form-data": {"schema": {
                   "type": "object", "properties": {"file": {"type": "string", "format": "binary"}},
                   "required": ["file"]}}})
    router.add("GET", "/v1/files", list_files, response=FileList, tags=tags)
    router.add("GET", "/v1/files/{file_id}", get_file, response=FileOut, tags=tags, errors=(404,))
    router.add("GET", "/v1/files/{file_id}/content", download_file, tags=tags, errors=(404,))
    router.add("DELETE", "/v1/files/{file_id}", delete_file, status=204, tags=tags, errors=(404,))
