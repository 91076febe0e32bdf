"""Recorded files in the store (table ``recordings``) and the API that lists them:

- ``GET /v1/recordings?room_id=&egress_id=&since=&until=&limit=``: files (newest first) whose
  time overlaps [since, until] (Unix seconds), with size, duration, start/end, storage URL and
  upload state; rows outlive restarts.
- ``GET /v1/recordings/{recording_id}``: one file.
- ``GET /v1/recordings/{recording_id}/download``: the file itself from the ``local`` backend
  (``Content-Disposition: attachment``, ``X-Content-Type-Options: nosniff``), or a redirect to
  the storage URL of another backend.
"""

from __future__ import annotations

import math
import mimetypes
import secrets
import time
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from aiohttp import web

from gateway.errors import NotFound, ValidationFailed
from gateway.store.tables import recordings as table

if TYPE_CHECKING:
    from gateway.node import Node

COLUMNS = {c.name for c in table.columns}
CONTENT_TYPES = {"mp4": "video/mp4", "m3u8": "application/vnd.apple.mpegurl", "m4a": "audio/mp4",
                 "ogg": "audio/ogg", "wav": "audio/wav", "mp3": "audio/mpeg", "ts": "video/mp2t"}


def _row(info: dict[str, Any]) -> dict[str, Any]:
    row = {k: v for k, v in info.items() if k in COLUMNS and k != "meta"}
    row["meta"] = {k: v for k, v in info.items() if k not in COLUMNS}
    return row


def _public(row: dict[str, Any]) -> dict[str, Any]:
    meta = row.pop("meta", None) or {}
    return {**row, **meta}


def recovered_file(data: dict[str, Any], failed: bool) -> dict[str, Any]:
    """The file record of a recording a crash interrupted, from the spool's upload event (its
    ``meta`` holds what the spool measured when it finalized the file)."""
    meta = data.get("meta") or {}
    filename, key = str(data.get("filename", "")), str(data.get("key") or data.get("filename", ""))
    name = filename.rsplit("/", 1)[-1]
    now = time.time()
    started = float(meta.get("started_at") or now)
    duration = float(meta.get("duration_s") or 0.0)
    return {"recording_id": f"RC_{secrets.token_hex(8)}", "filename": filename, "name": name,
            "format": str(meta.get("format") or name.rsplit(".", 1)[-1]), "size": int(data.get("size") or 0),
            "duration_s": round(duration, 3), "started_at": round(started, 3),
            "ended_at": round(float(meta.get("ended_at") or started + duration), 3),
            "participant_id": meta.get("participant_id"), "backend": str(data.get("backend") or "local"),
            "storage_prefix": key[: -len(filename)].strip("/") if filename and key.endswith(filename) else "",
            "url": None if failed else data.get("url"), "key": key, "upload": "failed" if failed else "done",
            "recovered": True}


async def insert(node: Node, info: dict[str, Any]) -> None:
    async with node.store.engine.begin() as conn:
        await conn.execute(table.insert().values(**_row(info)))


async def update_upload(node: Node, data: dict[str, Any], failed: bool) -> bool:
    """Mark a file uploaded (or failed) from an upload event; False when no row matches."""
    changes: dict[str, Any] = {"upload": "failed" if failed else "done"}
    if not failed and data.get("url"):
        changes["url"] = data["url"]
    query = table.update().where(table.c.egress_id == data.get("egress_id"),
                                 table.c.filename == data.get("filename")).values(**changes)
    async with node.store.engine.begin() as conn:
        result = await conn.execute(query)
    return result.rowcount > 0


async def list_rows(node: Node, *, room_id: str | None = None, egress_id: str | None = None,
                    since: float | None = None, until: float | None = None, limit: int = 1000) -> list[dict[str, Any]]:
    query = sa.select(table).order_by(table.c.started_at.desc(), table.c.recording_id).limit(limit)
    if room_id:
        query = query.where(table.c.room_id == room_id)
    if egress_id:
        query = query.where(table.c.egress_id == egress_id)
    if since is not None:
        query = query.where(table.c.ended_at >= since)
    if until is not None:
        query = query.where(table.c.started_at <= until)
    async with node.store.engine.connect() as conn:
        return [_public(dict(r)) for r in (await conn.execute(query)).mappings().all()]


async def get_row(node: Node, recording_id: str) -> dict[str, Any]:
    async with node.store.engine.connect() as conn:
        row = (await conn.execute(sa.select(table).where(table.c.recording_id == recording_id))).mappings().first()
    if row is None:
        raise NotFound(f"recording {recording_id!r} does not exist", code="recording_not_found",
                       field="recording_id")
    return _public(dict(row))


def _number(request: web.Request, name: str) -> float | None:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return None
    try:
        value = float(raw)
    except ValueError:
        raise ValidationFailed(f"{name} must be a Unix time in seconds", field=name) from None
    if not math.isfinite(value):
        raise ValidationFailed(f"{name} must be a finite number", field=name)
    return value


def add_routes(app: web.Application, node: Node) -> None:
    from gateway.api.middleware import require_operator

    async def list_recordings(request: web.Request) -> web.Response:
        require_operator(request, "recordings.read")
        limit_raw = request.query.get("limit", "1000")
        if not limit_raw.isdigit() or not 1 <= int(limit_raw) <= 10000:
            raise ValidationFailed("limit must be an integer from 1 to 10000", field="limit")
        rows = await list_rows(node, room_id=request.query.get("room_id") or None,
                               egress_id=request.query.get("egress_id") or None, since=_number(request, "since"),
                               until=_number(request, "until"), limit=int(limit_raw))
        return web.json_response({"recordings": rows, "count": len(rows)})

    async def get_recording(request: web.Request) -> web.Response:
        require_operator(request, "recordings.read")
        return web.json_response(await get_row(node, request.match_info["recording_id"]))

    async def download(request: web.Request) -> web.StreamResponse:
        require_operator(request, "recordings.read")
        row = await get_row(node, request.match_info["recording_id"])
        backend = node.storage.get(row["backend"])
        resolve = getattr(backend, "resolve", None)
        if resolve is None:
            if not row.get("url"):
                raise NotFound("the file is not in storage yet", code="file_not_found", field="recording_id")
            raise web.HTTPTemporaryRedirect(row["url"])
        path = resolve("/".join(p for p in (row.get("storage_prefix", "").strip("/"), row["filename"]) if p))
        name = row["filename"].rsplit("/", 1)[-1]
        ext = name.rsplit(".", 1)[-1]
        return web.FileResponse(path, headers={
            "Content-Disposition": f'attachment; filename="{name}"', "X-Content-Type-Options": "nosniff",
            "Content-Type": CONTENT_TYPES.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"})

    _document(app)
    app.router.add_get("/v1/recordings", list_recordings)
    app.router.add_get("/v1/recordings/{recording_id}", get_recording)
    app.router.add_get("/v1/recordings/{recording_id}/download", download)


def _document(app: web.Application) -> None:
    """Add the routes to the node's served OpenAPI document (plugin routes are not in it by
    themselves)."""
    from gateway.api import OPENAPI

    spec = app.get(OPENAPI)
    if not isinstance(spec, dict):
        return
    errors = {status: {"description": text, "content": {"application/json": {"schema": {"type": "object"}}}}
              for status, text in (("400", "bad parameter"), ("401", "no or bad credentials"),
                                   ("404", "no such recording"))}
    query = [{"name": name, "in": "query", "required": False, "schema": schema, "description": text}
             for name, schema, text in (
                 ("room_id", {"type": "string"}, "only this room's files"),
                 ("egress_id", {"type": "string"}, "only this task's files"),
                 ("since", {"type": "number"}, "files ending at or after this Unix time (s)"),
                 ("until", {"type": "number"}, "files starting at or before this Unix time (s)"),
                 ("limit", {"type": "integer", "minimum": 1, "maximum": 10000}, "at most this many (1000)"))]
    rid = [{"name": "recording_id", "in": "path", "required": True, "schema": {"type": "string"}}]
    ok = {"description": "ok", "content": {"application/json": {"schema": {"type": "object"}}}}
    security = [{"bearer": []}, {"basic": []}]

    def op(name: str, summary: str, params: list[dict[str, Any]], responses: dict[str, Any]) -> dict[str, Any]:
        return {"get": {"summary": summary, "description": summary, "tags": ["recordings"], "operationId": name,
                        "parameters": params, "responses": responses, "security": security}}

    paths = spec.setdefault("paths", {})
    paths["/v1/recordings"] = op("list_recordings", "Recorded files (kept across restarts)", query,
                                 {"200": ok, **errors})
    paths["/v1/recordings/{recording_id}"] = op("get_recording", "One recorded file", rid, {"200": ok, **errors})
    paths["/v1/recordings/{recording_id}/download"] = op(
        "download_recording", "Download a recorded file (local backend) or be redirected to its storage URL", rid,
        {"200": {"description": "the file"}, "307": {"description": "storage URL"}, **errors})
