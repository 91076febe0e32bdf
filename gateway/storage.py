"""Storage backends: where recordings (and later uploads) are written.

A backend is contributed by a plugin through ``mediagate_storage_backends``; the recorder
asks the registry for one by name (``local``, ``s3``, ``cos``, ``qiniu``). Recorders never call
``put`` themselves: they write into the upload spool (:mod:`gateway.spool`), which calls
``put`` with retries, in order, and again after a restart.

``options`` is the request's ``record.storage`` (``backend``, ``bucket``, ``endpoint``, ``region``,
``access_key``, ``secret_key``, ``prefix``); a backend fills what it leaves empty from its
plugin's config section. A backend that calls a blocking SDK runs it with ``asyncio.to_thread``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gateway.errors import ValidationFailed

if TYPE_CHECKING:
    from gateway.node import Node


class UploadError(Exception):
    """A failed ``put``: `code` and `message` are what the storage server said (or the local
    reason), `retry` False when trying again cannot help (bad credentials, no such bucket)."""

    def __init__(self, message: str, *, code: str = "upload_failed", retry: bool = True) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.retry = retry


def join_key(prefix: str | None, name: str) -> str:
    """An object key: the storage prefix, then the file's name, joined by one slash."""
    parts = [part.strip("/") for part in (prefix or "", name) if part and part.strip("/")]
    return "/".join(parts)


def check_prefix(options: dict[str, Any], field: str = "record.storage.prefix") -> None:
    """A prefix is a relative key path: no '..', no leading slash, no NUL or backslash."""
    prefix = options.get("prefix") or ""
    if ".." in prefix.split("/") or prefix.startswith("/") or "\\" in prefix or "\x00" in prefix:
        raise ValidationFailed("prefix must be a relative path without '..', '\\' or NUL", field=field)


class StorageBackend(Protocol):
    name: str

    def validate(self, options: dict[str, Any]) -> None:
        """Raise ValidationFailed (naming the field) if `options` cannot work."""

    def local_dir(self, options: dict[str, Any]) -> Path | None:
        """A directory where files can be written in place, or None when files are written to
        the spool and handed over with `put` (every built-in backend, ``local`` included)."""

    async def put(self, path: Path, key: str, options: dict[str, Any]) -> dict[str, Any]:
        """Store the finished file at `key`; return ``{"url": ..., "key": ..., "size": ...}``.
        Raise :class:`UploadError` with the server's code and message when it fails; the spool
        retries. The file at `path` may be moved (``local``) or left for the spool to delete."""


class StorageRegistry:
    def __init__(self) -> None:
        self.backends: dict[str, StorageBackend] = {}

    def collect(self, node: Node) -> None:
        for provided in node.pm.hook.mediagate_storage_backends(node=node):
            for backend in provided or []:
                self.backends[backend.name] = backend

    def get(self, name: str) -> StorageBackend:
        backend = self.backends.get(name)
        if backend is None:
            known = ", ".join(sorted(self.backends)) or "none"
            raise ValidationFailed(f"unknown storage backend {name!r}; available: {known}",
                                   field="record.storage.backend")
        return backend
