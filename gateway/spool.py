"""The upload spool: every recorded file is written here first and stored from here.

A recorder asks for a place to write (:meth:`UploadSpool.reserve`), writes, and hands the
finished file over (:meth:`UploadSpool.commit`). The spool then calls the storage backend's
``put`` with retries and exponential backoff, one file at a time per recording so parts and
segments arrive in the order they were committed. A storage outage only delays uploads.

Layout: ``<spool dir>/<egress_id>/<filename>`` with ``<filename>.manifest.json`` next to it.
The manifest (mode 0600, the directory 0700) holds what a restarted node needs to finish the
job, the request's storage credentials included. States: ``recording`` (being written),
``ready`` (committed, waiting), ``failed`` (gave up; retried at the next start). A stored file
and its manifest are deleted.

On start the spool uploads what is ``ready`` or ``failed`` and finalizes what a crash left
``recording``: a fragmented MP4 plays up to its last fragment as is, and is rewritten as a clean
MP4 (PyAV remux) when ``spool.remux_recovered`` is on; other formats are uploaded as they are.
Each recovered recording gets an ``egress.recovered`` event naming its files (the vendor's
305 "left-overs uploaded" case), and its uploads report ``recovered: true``.

Events (``node.events``): ``upload.done`` / ``upload.failed`` with ``{egress_id, room_id, backend,
filename, key, url, size, recovered, meta, error?: {code, message}}``; ``upload.retry`` after a
failed attempt that will be retried (``attempt``, ``retry_in_s``, ``error``);
``egress.recovered``; ``spool.low_disk`` when a recording is refused for lack of disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from gateway.errors import NoCapacity, ValidationFailed
from gateway.storage import UploadError, join_key

if TYPE_CHECKING:
    from gateway.config import SpoolConfig
    from gateway.node import Node

log = structlog.get_logger(__name__)

UPLOAD_DONE = "upload.done"
UPLOAD_FAILED = "upload.failed"
UPLOAD_RETRY = "upload.retry"
EGRESS_RECOVERED = "egress.recovered"
SPOOL_LOW_DISK = "spool.low_disk"
MANIFEST_SUFFIX = ".manifest.json"
REMUXABLE = (".mp4", ".m4a", ".mov")


class InsufficientStorage(NoCapacity):
    """The spool's disk is nearly full: new recordings are refused until space is freed."""

    status = 507
    code = "insufficient_storage"


@dataclass
class SpoolEntry:
    """One file in the spool; `path` is where the recorder writes it."""

    egress_id: str
    room_id: str
    filename: str
    path: Path
    storage: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)
    state: str = "recording"
    created_at: float = field(default_factory=time.time)
    committed_ns: int = 0  # orders uploads within an egress, across restarts too
    attempts: int = 0
    recovered: bool = False
    last_error: dict[str, Any] | None = None
    result: dict[str, Any] | None = None
    done: asyncio.Future[dict[str, Any]] | None = field(default=None, repr=False, compare=False)

    @property
    def manifest(self) -> Path:
        return self.path.with_name(self.path.name + MANIFEST_SUFFIX)

    @property
    def key(self) -> str:
        return join_key(self.storage.get("prefix"), self.meta.get("key") or self.filename)

    def to_manifest(self) -> dict[str, Any]:
        return {"egress_id": self.egress_id, "room_id": self.room_id, "filename": self.filename,
                "storage": self.storage, "meta": self.meta, "state": self.state, "created_at": self.created_at,
                "committed_ns": self.committed_ns, "attempts": self.attempts, "recovered": self.recovered,
                "last_error": self.last_error}

    @classmethod
    def from_manifest(cls, path: Path, data: dict[str, Any]) -> SpoolEntry:
        file_path = path.with_name(path.name[: -len(MANIFEST_SUFFIX)])
        return cls(egress_id=data["egress_id"], room_id=data["room_id"], filename=data["filename"], path=file_path,
                   storage=data.get("storage") or {}, meta=data.get("meta") or {}, state=data.get("state", "ready"),
                   created_at=data.get("created_at", 0.0), committed_ns=data.get("committed_ns", 0),
                   attempts=data.get("attempts", 0), recovered=data.get("recovered", False),
                   last_error=data.get("last_error"))


def _write_private(path: Path, text: str) -> None:
    """Write atomically with mode 0600: the manifest holds storage credentials."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def _check_filename(filename: str) -> None:
    parts = filename.split("/")
    if (not filename or filename.startswith("/") or "\\" in filename or "\x00" in filename
            or any(part in ("", ".", "..") for part in parts) or filename.endswith(MANIFEST_SUFFIX)):
        raise ValidationFailed(f"bad spool file name {filename!r}: a relative path without '..'", field="filename")


def remux_mp4(path: Path) -> bool:
    """Rewrite a (possibly truncated) fragmented MP4 as a clean MP4 in place, keeping every
    packet up to where the file breaks off; False (file untouched) when none is readable.
    Runs on a worker thread (PyAV)."""
    import av

    tmp = path.with_name(path.stem + ".remux" + path.suffix)
    packets = 0
    try:
        with av.open(str(path)) as source:
            streams = [s for s in source.streams if s.type in ("video", "audio")]
            with av.open(str(tmp), "w", format="mp4") as target:
                mapping = {s.index: target.add_stream_from_template(s) for s in streams}
                try:
                    for packet in source.demux(*streams):
                        if packet.dts is None or packet.size == 0:
                            continue
                        packet.stream = mapping[packet.stream.index]
                        target.mux(packet)
                        packets += 1
                except (av.error.FFmpegError, OSError) as exc:  # the cut-off tail: keep what came before
                    log.info("recovered recording ends in a partial fragment", path=str(path), error=str(exc))
    except (av.error.FFmpegError, OSError, ValueError) as exc:
        log.warning("remux of a recovered recording failed; uploading it as it is", path=str(path), error=str(exc))
        tmp.unlink(missing_ok=True)
        return False
    if packets == 0:
        tmp.unlink(missing_ok=True)
        return False
    os.replace(tmp, path)
    return True


def probe_duration(path: Path) -> float | None:
    import av

    try:
        with av.open(str(path)) as container:
            if container.duration:
                return container.duration / 1_000_000
    except (av.error.FFmpegError, OSError):
        return None
    return None


class UploadSpool:
    def __init__(self, node: Node, config: SpoolConfig) -> None:
        self.node = node
        self.config = config
        self.root = (config.dir or node.config.node.data_dir / "spool").resolve()
        self.min_free_bytes = int(config.min_free_mb * 1024 * 1024)
        self.stop_free_bytes = int(config.stop_free_mb * 1024 * 1024)
        self._queues: dict[str, deque[SpoolEntry]] = {}
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._slots = asyncio.Semaphore(config.concurrency)
        self._recovery: asyncio.Task[None] | None = None
        self._left: list[SpoolEntry] = []
        self._stopping = False

    # ------------------------------------------------------------------ lifecycle
    async def start(self, *, resume: bool = True) -> None:
        """Read the manifests the previous run left, now, before any new recording can start.
        They are finished and uploaded in the background (a remux can take a while, and the node
        must start serving) once :meth:`resume` is called: at once unless ``resume=False``, which
        the node uses to resume after its tasks are restored, so that the events and the file
        lists of recovered recordings reach observers and the tasks they belong to."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        self._stopping = False
        self._left = self._left_over()
        if resume:
            self.resume()

    def resume(self) -> None:
        """Start finishing and uploading what the previous run left (once per start)."""
        left, self._left = self._left, []
        if self._recovery is None or self._recovery.done():
            self._recovery = asyncio.create_task(self._recover(left), name="spool-recover")

    async def stop(self) -> None:
        """Stop uploading; what is not stored yet stays in the spool for the next start."""
        self._stopping = True
        tasks = [t for t in [self._recovery, *self._workers.values()] if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._workers.clear()
        self._queues.clear()

    # ------------------------------------------------------------------ recorder API
    def free_bytes(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free

    def check_capacity(self, room_id: str | None = None, egress_id: str | None = None, *,
                       running: bool = False) -> None:
        """Raise InsufficientStorage (507) and say so in an event when the disk is nearly full:
        below ``spool.min_free_mb`` for a new recording, below ``spool.stop_free_mb`` for the
        next file of a running one (which goes on between the two)."""
        free = self.free_bytes()
        floor = self.stop_free_bytes if running else self.min_free_bytes
        if free < floor:
            self.node.events.emit(SPOOL_LOW_DISK, room_id, egress_id=egress_id, free_bytes=free,
                                  min_free_bytes=floor, running=running, spool_dir=str(self.root))
            if running:
                raise InsufficientStorage(
                    f"the recording spool has {free // (1024 * 1024)} MB free, below the "
                    f"{self.config.stop_free_mb:g} MB (spool.stop_free_mb) a running recording needs", field="record")
            raise InsufficientStorage(
                f"the recording spool has {free // (1024 * 1024)} MB free, below the {self.config.min_free_mb:g} MB "
                "minimum (spool.min_free_mb): new recordings are refused until space is freed", field="record")

    def disk_low(self) -> bool:
        """Running recordings must end: the free disk is below ``spool.stop_free_mb``."""
        return self.free_bytes() < self.stop_free_bytes

    def reserve(self, *, room_id: str, egress_id: str, filename: str, storage: dict[str, Any],
                meta: dict[str, Any] | None = None, running: bool = False) -> SpoolEntry:
        """A place to write one file of a recording, with its manifest in state ``recording``
        (`running`: the next file of a recording already under way, see check_capacity)."""
        backend = self.node.storage.get(storage.get("backend") or "local")
        backend.validate(storage)
        _check_filename(filename)
        _check_filename(egress_id)
        self.check_capacity(room_id, egress_id, running=running)
        path = self.root / egress_id / filename
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        entry = SpoolEntry(egress_id=egress_id, room_id=room_id, filename=filename, path=path,
                           storage=dict(storage), meta=dict(meta or {}))
        self._save(entry)
        return entry

    async def commit(self, entry: SpoolEntry, meta: dict[str, Any] | None = None) -> None:
        """The file is complete: queue it for upload after the ones committed before it."""
        if meta:
            entry.meta.update(meta)
        entry.state = "ready"
        entry.committed_ns = time.time_ns()
        self._save(entry)
        self._enqueue(entry)

    def discard(self, entry: SpoolEntry) -> None:
        """Drop a reserved file that will not be kept (a recording stopped before any media)."""
        entry.path.unlink(missing_ok=True)
        entry.manifest.unlink(missing_ok=True)
        self._prune(entry.path.parent)

    async def uploaded(self, entry: SpoolEntry, timeout: float | None = None) -> dict[str, Any] | None:
        """Wait for the entry's upload; its result (``{url, key, size, ...}``), or None when it
        failed or did not finish within `timeout` (it goes on in the background)."""
        if entry.result is not None:
            return entry.result
        if entry.done is None:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(entry.done), timeout)
        except (TimeoutError, UploadError):
            return None

    def pending(self, egress_id: str | None = None) -> list[SpoolEntry]:
        """Entries queued for upload (and the one being uploaded), in upload order."""
        queues = [self._queues.get(egress_id, deque())] if egress_id else list(self._queues.values())
        return [entry for queue in queues for entry in queue]

    # ------------------------------------------------------------------ internals
    def _save(self, entry: SpoolEntry) -> None:
        _write_private(entry.manifest, json.dumps(entry.to_manifest(), ensure_ascii=False))

    def _enqueue(self, entry: SpoolEntry) -> None:
        if entry.done is None:
            entry.done = asyncio.get_running_loop().create_future()
        queue = self._queues.setdefault(entry.egress_id, deque())
        queue.append(entry)
        worker = self._workers.get(entry.egress_id)
        if (worker is None or worker.done()) and not self._stopping:
            self._workers[entry.egress_id] = asyncio.create_task(self._drain(entry.egress_id),
                                                                 name=f"spool-{entry.egress_id}")

    async def _drain(self, egress_id: str) -> None:
        queue = self._queues[egress_id]
        try:
            while queue:
                entry = queue[0]
                await self._upload(entry)
                queue.popleft()
        finally:
            if not queue:
                self._queues.pop(egress_id, None)
                self._workers.pop(egress_id, None)

    def _event_data(self, entry: SpoolEntry) -> dict[str, Any]:
        return {"egress_id": entry.egress_id, "room_id": entry.room_id, "filename": entry.filename,
                "key": entry.key, "backend": entry.storage.get("backend") or "local", "recovered": entry.recovered,
                "meta": entry.meta}

    async def _upload(self, entry: SpoolEntry) -> None:
        """Try until stored, a permanent error, or max_attempts; every outcome is an event."""
        delay = self.config.backoff_initial_s
        while True:
            entry.attempts += 1
            try:
                backend = self.node.storage.get(entry.storage.get("backend") or "local")
                size = entry.path.stat().st_size
                # a slot per attempt, not per recording: one retrying against a dead server
                # must not hold up recordings bound for another backend
                async with self._slots:
                    result = await backend.put(entry.path, entry.key, entry.storage)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every failure is reported, none kills the worker
                error = _error_of(exc)
                permanent = isinstance(exc, FileNotFoundError) or not getattr(exc, "retry", True)
                retry = not permanent and entry.attempts < self.config.max_attempts
                entry.last_error = error
                if not retry:
                    entry.state = "failed"
                    self._save(entry)
                    self.node.events.emit(UPLOAD_FAILED, entry.room_id, **self._event_data(entry), url=None,
                                          size=entry.path.stat().st_size if entry.path.exists() else 0,
                                          attempts=entry.attempts, error=error)
                    if entry.done is not None and not entry.done.done():
                        entry.done.set_exception(UploadError(error["message"], code=error["code"], retry=False))
                        entry.done.exception()  # retrieved: nobody has to wait for it
                    log.warning("upload failed", egress_id=entry.egress_id, filename=entry.filename,
                                attempts=entry.attempts, code=error["code"])
                    return
                self._save(entry)
                self.node.events.emit(UPLOAD_RETRY, entry.room_id, **self._event_data(entry),
                                      attempt=entry.attempts, retry_in_s=delay, error=error)
                log.info("upload attempt failed; retrying", egress_id=entry.egress_id, filename=entry.filename,
                         attempt=entry.attempts, retry_in_s=delay, code=error["code"])
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.config.backoff_max_s)
                continue
            result = {"size": size, **result}
            entry.result = result
            entry.state = "done"
            entry.path.unlink(missing_ok=True)  # a local backend has moved it already
            entry.manifest.unlink(missing_ok=True)
            self._prune(entry.path.parent)
            self.node.events.emit(UPLOAD_DONE, entry.room_id, **self._event_data(entry), url=result.get("url"),
                                  size=result["size"], stored=result)
            if entry.done is not None and not entry.done.done():
                entry.done.set_result(result)
            return

    def _prune(self, directory: Path) -> None:
        """Remove empty directories up to the spool root."""
        with contextlib.suppress(OSError):
            while directory != self.root and directory.is_relative_to(self.root):
                directory.rmdir()
                directory = directory.parent

    def _left_over(self) -> list[SpoolEntry]:
        entries: list[SpoolEntry] = []
        for manifest in sorted(self.root.rglob("*" + MANIFEST_SUFFIX)):
            try:
                entries.append(SpoolEntry.from_manifest(manifest, json.loads(manifest.read_text())))
            except (OSError, ValueError, KeyError) as exc:
                log.warning("unreadable spool manifest left alone", manifest=str(manifest), error=str(exc))
        return entries

    async def _recover(self, entries: list[SpoolEntry]) -> None:
        recovered: dict[str, list[SpoolEntry]] = {}
        for entry in entries:
            if entry.state != "recording":
                continue
            # a crash interrupted this recording: make the file playable and queue it
            if not entry.path.exists() or entry.path.stat().st_size == 0:
                log.warning("recording interrupted before any media; dropped", filename=entry.filename)
                self.discard(entry)
                entry.state = "dropped"
                continue
            if self.config.remux_recovered and entry.path.suffix.lower() in REMUXABLE:
                # when nothing is readable the file still goes up as it is: the spool loses nothing
                await asyncio.to_thread(remux_mp4, entry.path)
            duration = await asyncio.to_thread(probe_duration, entry.path)
            # the manifest was written when the file was opened: that is when its media starts
            started = round(entry.meta.get("started_at") or entry.created_at, 3)
            entry.meta.update(recovered=True, size=entry.path.stat().st_size, started_at=started,
                              ended_at=round(started + (duration or 0.0), 3),
                              **({"duration_s": round(duration, 3)} if duration is not None else {}))
            entry.recovered = True
            entry.state = "ready"
            entry.committed_ns = entry.committed_ns or int(entry.created_at * 1e9)
            self._save(entry)
            recovered.setdefault(entry.egress_id, []).append(entry)
        for egress_id, items in recovered.items():
            log.warning("recording interrupted by a restart recovered", egress_id=egress_id,
                        files=[e.filename for e in items])
            self.node.events.emit(EGRESS_RECOVERED, items[0].room_id, egress_id=egress_id, reason="node_restart",
                                  files=[{"filename": e.filename, "key": e.key, "size": e.path.stat().st_size,
                                          "duration_s": e.meta.get("duration_s")} for e in items])
        queued = [e for e in entries if e.state in ("ready", "failed", "uploading")]
        for entry in sorted(queued, key=lambda e: (e.egress_id, e.committed_ns, e.created_at)):
            if not entry.path.exists():
                # a stop interrupted the last step: the backend had taken the file (a local move)
                # but the manifest was not removed yet; nothing is left to upload
                log.info("spooled file already handed over; manifest removed", filename=entry.filename)
                entry.manifest.unlink(missing_ok=True)
                self._prune(entry.path.parent)
                continue
            entry.attempts = 0
            self._enqueue(entry)


def _error_of(exc: BaseException) -> dict[str, str]:
    if isinstance(exc, UploadError):
        return {"code": exc.code, "message": exc.message}
    if isinstance(exc, FileNotFoundError):
        return {"code": "file_missing", "message": f"the spooled file is gone: {exc.filename}"}
    return {"code": type(exc).__name__, "message": str(exc) or type(exc).__name__}
