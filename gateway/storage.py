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

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar
from urllib.parse import urlsplit

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


T = TypeVar("T")
SETTING_KEYS = ("endpoint", "region", "bucket", "access_key", "secret_key")


def merge_settings(config: Any, options: dict[str, Any], keys: tuple[str, ...] = SETTING_KEYS) -> dict[str, Any]:
    """A backend's settings for one request: the request's ``record.storage`` fields over the
    plugin config's, field by field (an empty or missing request field falls back to the
    config), so an operator can keep credentials in the config and requests name a bucket."""
    merged = {k: getattr(config, k) for k in keys}
    merged.update({k: v for k, v in options.items() if k in merged and v})
    return merged


def url_problem(url: str) -> str | None:
    """Why `url` is not an ``http(s)://host[:port]`` base (no path, query or fragment), or None."""
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a bad port
    except ValueError as exc:
        return str(exc)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "must be an http:// or https:// URL with a host"
    if parts.query or parts.fragment or parts.path not in ("", "/"):
        return "must be scheme://host[:port] without a path"
    return None


def upload_error(exc: BaseException,
                 translate: Callable[[BaseException], UploadError | None] | None = None) -> UploadError:
    """An SDK's failure as an UploadError: the first exception along the cause chain that
    `translate` recognises gives the server's own code and message (SDKs wrap them in their
    transfer layers); anything else is reported by its type and text, and retried."""
    if isinstance(exc, UploadError):
        return exc
    cause: BaseException | None = exc
    seen: set[int] = set()
    while translate is not None and cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if (known := translate(cause)) is not None:
            return known
        cause = cause.__cause__ or cause.__context__
    return UploadError(str(exc) or type(exc).__name__, code=type(exc).__name__)


async def run_upload(fn: Callable[..., T], *args: Any,
                     translate: Callable[[BaseException], UploadError | None] | None = None) -> T:
    """Run a blocking SDK upload on a worker thread; its failure comes out as an UploadError
    (see :func:`upload_error`), which the spool reports and retries."""
    try:
        return await asyncio.to_thread(fn, *args)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        raise upload_error(exc, translate) from exc


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
