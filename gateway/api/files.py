"""Uploads: POST /v1/files (multipart, field ``file``), metadata, download, delete."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from gateway.api import NODE
from gateway.api.middleware import principal, require_operator
from gateway.api.routing import ApiRouter
from gateway.api.schemas import FileList, FileOut
from gateway.errors import BadRequest, PayloadTooLarge, UnsupportedMediaType

if TYPE_CHECKING:
    from gateway.node import Node

MULTIPART_SLACK = 64 * 1024  # boundaries and headers around the file itself
# what aiohttp's multipart reader raises on a body it cannot parse (bad part headers, no boundary)
MULTIPART_ERRORS = (HttpProcessingError, ValueError, AssertionError, RuntimeError, UnicodeError, KeyError)


def _node(request: web.Request) -> Node:
    return request.app[NODE]


def _malformed(exc: Exception) -> BadRequest:
    return BadRequest(f"malformed multipart body: {str(exc)[:200] or type(exc).__name__}", code="malformed_multipart",
                      field="file")


async def _chunks(part: BodyPartReader) -> AsyncIterator[bytes]:
    while True:
        try:
            chunk = await part.read_chunk(256 * 1024)
        except MULTIPART_ERRORS as exc:
            raise _malformed(exc) from exc
        if not chunk:
            return
        yield chunk


def _filename(part: BodyPartReader) -> str:
    """The part's filename as UTF-8 text without control characters (it is stored and echoed)."""
    try:
        name = part.filename
    except MULTIPART_ERRORS as exc:
        raise BadRequest("the 'file' field's filename cannot be read", code="bad_filename", field="file") from exc
    if not name:
        raise BadRequest("the 'file' field has no filename", code="missing_filename", field="file")
    try:
        name.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest("the filename is not valid UTF-8", code="bad_filename", field="file") from exc
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        raise BadRequest("the filename holds control characters", code="bad_filename", field="file")
    return name


def _unknown_field(name: str | None) -> BadRequest:
    name = str(name or "")[:64]
    return BadRequest(f"unknown form field {name!r}: send only 'file'", code="unknown_field", field=name or "file")


async def _next_part(reader: MultipartReader) -> object:
    try:
        return await reader.next()
    except MULTIPART_ERRORS as exc:
        raise _malformed(exc) from exc


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
    try:
        reader = await request.multipart()
    except MULTIPART_ERRORS as exc:  # no boundary, or an unparsable content type
        raise _malformed(exc) from exc
    unknown: list[str] = []  # the form has one field, and the schema says so
    while True:
        part = await _next_part(reader)
        if part is None:
            raise BadRequest("no 'file' field in the form", code="missing_file", field="file")
        if isinstance(part, BodyPartReader) and part.name == "file":
            if unknown:
                raise _unknown_field(unknown[0])
            filename = _filename(part)
            info = await node.files.save_stream(filename, _chunks(part), owner=principal(request).subject)
            extra = await _next_part(reader)
            if extra is not None:  # take the file back rather than guess what the rest meant
                await node.files.delete(info["file_id"])
                raise _unknown_field(getattr(extra, "name", None))
            node.events.emit("upload.done", None, file_id=info["file_id"], name=info["name"], size=info["size"])
            return web.json_response(info, status=201)
        if not isinstance(part, BodyPartReader):
            raise BadRequest("nested multipart parts are not accepted", code="malformed_multipart", field="file")
        unknown.append(part.name or "")
        try:
            await part.release()
        except MULTIPART_ERRORS as exc:
            raise _malformed(exc) from exc


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
                   "required": ["file"], "additionalProperties": False}}})
    router.add("GET", "/v1/files", list_files, response=FileList, tags=tags)
    router.add("GET", "/v1/files/{file_id}", get_file, response=FileOut, tags=tags, errors=(404,))
    router.add("GET", "/v1/files/{file_id}/content", download_file, tags=tags, errors=(404,))
    router.add("DELETE", "/v1/files/{file_id}", delete_file, status=204, tags=tags, errors=(404,))
