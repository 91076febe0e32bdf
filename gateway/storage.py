"""Storage backends: where recordings (and later uploads) are written.

A backend is contributed by a plugin through ``mediagate_storage_backends``; the recorder
asks the registry for one by name (``local``, ``s3``, ``cos``, ``qiniu``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from gateway.errors import ValidationFailed

if TYPE_CHECKING:
    from gateway.node import Node


class StorageBackend(Protocol):
    name: str

    def validate(self, options: dict[str, Any]) -> None:
        """Raise ValidationFailed (naming the field) if `options` cannot work."""

    def local_dir(self, options: dict[str, Any]) -> Path | None:
        """A directory where files can be written in place (local disk), or None when
        files are written to a spool and uploaded with `put`."""

    async def put(self, path: Path, key: str, options: dict[str, Any]) -> dict[str, Any]:
        """Store the finished file at `key`; return ``{"url": ..., "key": ..., "size": ...}``."""


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
