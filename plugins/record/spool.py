"""Where the recorder writes a file and how it hands it over for storage.

The node's upload spool (``node.spool``, :class:`gateway.spool.UploadSpool`) is used when the
node has one: ``reserve`` gives the path to write, ``commit`` uploads it in the background
with retries and announces ``upload.done`` / ``upload.failed``. Until then this module keeps
a stand-in with the same two calls: it writes into the backend's local directory (or
``data_dir/spool``) and stores the file with ``storage.put`` at commit, emitting the same
events. :func:`spool_of` is the one place that chooses.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from gateway import events as ev

if TYPE_CHECKING:
    from gateway.node import Node

log = structlog.get_logger(__name__)


class SpoolEntry(Protocol):
    path: Path


class Spool(Protocol):
    def reserve(self, *, room_id: str, egress_id: str, filename: str, storage: dict[str, Any],
                meta: dict[str, Any], running: bool = False) -> SpoolEntry: ...

    async def commit(self, entry: Any, meta: dict[str, Any]) -> Any: ...


def spool_of(node: Node) -> Spool:
    spool = getattr(node, "spool", None)
    if spool is not None:
        return spool  # type: ignore[no-any-return]
    fallback = getattr(node, "_record_local_spool", None)
    if fallback is None:
        fallback = LocalSpool(node)
        node._record_local_spool = fallback  # type: ignore[attr-defined]
    return fallback


@dataclass
class LocalEntry:
    room_id: str
    egress_id: str
    filename: str
    storage: dict[str, Any]
    path: Path
    meta: dict[str, Any] = field(default_factory=dict)


class LocalSpool:
    """The stand-in: the same interface, storing at commit time (one attempt)."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def reserve(self, *, room_id: str, egress_id: str, filename: str, storage: dict[str, Any],
                meta: dict[str, Any], running: bool = False) -> LocalEntry:
        backend = self.node.storage.get(storage.get("backend", "local"))
        local = backend.local_dir(storage)
        root = Path(local) if local is not None else self.node.config.node.data_dir / "spool"
        path = (root / filename).resolve()
        if not path.is_relative_to(root.resolve()):
            raise ValueError("file name leaves the storage root")
        path.parent.mkdir(parents=True, exist_ok=True)
        return LocalEntry(room_id, egress_id, filename, storage, path, dict(meta))

    async def commit(self, entry: LocalEntry, meta: dict[str, Any]) -> dict[str, Any]:
        data = {"egress_id": entry.egress_id, "room_id": entry.room_id, "filename": entry.filename,
                "recovered": False}
        backend = self.node.storage.get(entry.storage.get("backend", "local"))
        started = time.monotonic()
        try:
            stored = await backend.put(entry.path, entry.filename, entry.storage)
        except Exception as exc:
            log.warning("upload failed", egress_id=entry.egress_id, filename=entry.filename, error=str(exc))
            self.node.events.emit(ev.UPLOAD_FAILED, entry.room_id, **data, error=str(exc),
                                  size=meta.get("size"))
            return {"upload": "failed", "error": str(exc)}
        done = {**data, "key": stored.get("key", entry.filename), "url": stored.get("url"),
                "size": stored.get("size", meta.get("size")), "seconds": round(time.monotonic() - started, 3),
                **({"path": stored["path"]} if stored.get("path") else {})}
        self.node.events.emit(ev.UPLOAD_DONE, entry.room_id, **done)
        return {"upload": "done", **stored}
