"""Storage backend ``local``: recordings kept under a directory of the node, served back to
operators at ``GET /v1/storage/local/{key}``.

Like every backend, files are written to the upload spool first; ``put`` moves the finished
file to ``<dir>/<key>`` (a rename on the same disk), so an interrupted recording is recovered
and stored exactly as a remote one is."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from gateway.errors import NotFound
from gateway.hookspecs import hookimpl
from gateway.storage import UploadError, check_prefix

if TYPE_CHECKING:
    from gateway.node import Node


class LocalStorageConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dir: Path | None = Field(None, description="root directory; default node.data_dir/recordings")


class LocalStorage:
    name = "local"

    def __init__(self, root: Path, public_url: Callable[[], str]) -> None:
        self.root = root
        self.public_url = public_url

    def validate(self, options: dict[str, Any]) -> None:
        check_prefix(options)

    def local_dir(self, options: dict[str, Any]) -> None:
        return None  # written to the spool, moved here by put

    async def put(self, path: Path, key: str, options: dict[str, Any]) -> dict[str, Any]:
        """Move the spooled file to `key` under the root."""
        target = (self.root / key).resolve()
        if not target.is_relative_to(self.root.resolve()):
            raise UploadError(f"key {key!r} leaves the storage directory", code="bad_key", retry=False)
        try:
            size = await asyncio.to_thread(_move, path, target)
        except OSError as exc:
            raise UploadError(f"cannot store {key!r}: {exc.strerror or exc}", code="local_io_error") from exc
        relative = target.relative_to(self.root.resolve()).as_posix()
        return {"backend": self.name, "key": relative, "path": str(target), "size": size,
                "url": f"{self.public_url()}/v1/storage/local/{relative}"}

    def resolve(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():
            raise NotFound(f"no stored file {key!r}", code="file_not_found", field="key")
        return path


def _move(source: Path, target: Path) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, target)
    except OSError:  # another file system: copy, then drop the spooled copy
        shutil.copyfile(source, target)
        source.unlink()
    return target.stat().st_size


class LocalStoragePlugin:
    config_model = LocalStorageConfig
    config: LocalStorageConfig

    def __init__(self) -> None:
        self.config = LocalStorageConfig()
        self.backend: LocalStorage | None = None

    @hookimpl
    def mediagate_configure(self, node: Node) -> None:
        root = self.config.dir or node.config.node.data_dir / "recordings"
        root.mkdir(parents=True, exist_ok=True)
        self.backend = LocalStorage(root, node.public_url)

    @hookimpl
    def mediagate_storage_backends(self, node: Node) -> list[LocalStorage]:
        assert self.backend is not None
        return [self.backend]

    @hookimpl
    def mediagate_http_routes(self, app: web.Application, node: Node) -> None:
        backend = self.backend
        assert backend is not None

        async def download(request: web.Request) -> web.FileResponse:
            from gateway.api.middleware import require_operator

            require_operator(request, "storage.read")
            path = backend.resolve(request.match_info["key"])
            return web.FileResponse(path, headers={"Content-Disposition": f'attachment; filename="{path.name}"',
                                                   "X-Content-Type-Options": "nosniff"})

        app.router.add_get("/v1/storage/local/{key:.+}", download)
