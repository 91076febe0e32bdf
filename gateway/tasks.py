"""Long-running things a user can see (egress, ingress; later SIP calls, uploads): each is a
task with an id, a status machine, a history of status changes, errors and a final report.
Every change is an event and is written to the store."""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

from gateway.errors import MediagateError, NotFound, Unprocessable, ValidationFailed

if TYPE_CHECKING:
    from pydantic import BaseModel

    from gateway.node import Node
    from gateway.rooms.room import Room

log = structlog.get_logger(__name__)


@dataclass
class Task:
    task_id: str
    kind: str  # "egress" | "ingress"
    room_id: str
    spec: dict[str, Any]
    status: str = "starting"
    history: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None
    result: dict[str, Any] = field(default_factory=dict)
    created_at: float = field(default_factory=time.time)
    ended_at: float | None = None
    runner: Any = None  # the kind's running object

    @property
    def active(self) -> bool:
        return self.ended_at is None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Task:
        """A task as the store kept it (no runner: a record of a past process)."""
        result = dict(row.get("result") or {})
        history = list(result.pop("history", None) or [])
        error = result.pop("error", None)
        return cls(row["task_id"], row["kind"], row["room_id"], dict(row.get("spec") or {}), status=row["status"],
                   history=history, error=error, result=result, created_at=row["created_at"],
                   ended_at=row.get("ended_at"))

    def describe(self) -> dict[str, Any]:
        return {f"{self.kind}_id": self.task_id, "room_id": self.room_id, "kind": self.spec.get("kind"),
                "status": self.status, "created_at": self.created_at, "ended_at": self.ended_at,
                "error": self.error, "history": self.history, **self.result, "request": _public_spec(self.spec)}


def _public_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The request as stored, minus storage secrets."""
    out = dict(spec)
    record = out.get("record")
    if isinstance(record, dict) and isinstance(record.get("storage"), dict):
        storage = {k: ("***" if "secret" in k and v else v) for k, v in record["storage"].items()}
        out["record"] = {**record, "storage": storage}
    return out


class TaskBook:
    """Keeps a service's tasks in memory and mirrors every change to the store and the bus."""

    def __init__(self, node: Node, kind: str, events: dict[str, str]) -> None:
        self.node = node
        self.kind = kind
        self.event_names = events  # "started" | "status" | "ended" -> event name
        self.tasks: dict[str, Task] = {}

    async def add(self, task: Task) -> Task:
        self.tasks[task.task_id] = task
        task.history.append({"status": task.status, "ts_ms": int(time.time() * 1000)})
        await self.node.store.add_task({"task_id": task.task_id, "kind": self.kind, "room_id": task.room_id,
                                        "status": task.status, "spec": _public_spec(task.spec), "result": {},
                                        "node_id": self.node.node_id})
        return task

    async def set_status(self, task: Task, status: str, *, error: dict[str, Any] | None = None,
                         ended: bool = False, **data: Any) -> None:
        changed = status != task.status
        task.status = status
        if error is not None:
            task.error = error
        if ended and task.ended_at is None:
            task.ended_at = time.time()
        if changed:
            task.history.append({"status": status, "ts_ms": int(time.time() * 1000),
                                 **({"error": error} if error else {})})
        await self.node.store.update_task(task.task_id, {"status": status, "result": {**task.result,
                                                         "error": task.error, "history": task.history},
                                                         "ended_at": task.ended_at})
        phase = "ended" if ended else "status"
        self.node.events.emit(self.event_names[phase], task.room_id, **{f"{self.kind}_id": task.task_id},
                              status=status, error=error, **data)
        callback = task.spec.get("callback_url")
        if callback:
            self._callback(callback, self.event_names[phase], task, status, error, data)

    def _callback(self, url: str, name: str, task: Task, status: str, error: Any, data: dict[str, Any]) -> None:
        from gateway.events import Event

        event = Event(name, task.room_id, {f"{self.kind}_id": task.task_id, "status": status, "error": error, **data})
        if not self.node.pm.hook.mediagate_task_callback(url=url, event=event, node=self.node):
            log.warning("task has a callback_url but no plugin delivers callbacks", task_id=task.task_id)

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for task in self.tasks.values():
            counts[task.status] = counts.get(task.status, 0) + 1
        return counts


class TaskService:
    """What egress and ingress share: kinds contributed by plugins, tasks started with a clear
    failure report, stopped on request, when their room closes, and when the node stops."""

    noun = "task"  # "egress" | "ingress": ids, events and error codes are named after it
    id_prefix = "TS_"
    kinds_hook = ""  # the hook that contributes kinds, e.g. "mediagate_egress_kinds"
    running_status = "active"
    ending_status: str | None = None  # a status shown while the runner stops, if any
    restart_status = "failed"  # what a task left running by a dead process becomes
    restore_limit = 10_000  # newest stored tasks brought back on start

    def __init__(self, node: Node, events: dict[str, str]) -> None:
        self.node = node
        self.kinds: dict[str, Any] = {}
        self.book = TaskBook(node, self.noun, events)
        node.rooms.on_close(self._room_closed)

    async def restore(self) -> None:
        """On start: bring this node's stored tasks back as read-only records, so they and their
        files are still answered; a task the store still shows running was cut off by a crash
        (SIGKILL, power loss), so it ends now with reason ``node_restart`` and an event."""
        rows = await self.node.store.list_tasks(kind=self.noun)
        for row in rows[-self.restore_limit:]:
            if row.get("node_id") not in (None, self.node.node_id) or row["task_id"] in self.book.tasks:
                continue  # another node's task (shared store) answers there
            task = Task.from_row(row)
            self.book.tasks[task.task_id] = task
            if task.active:
                log.warning(f"{self.noun} was running when the node stopped abruptly; marking it ended",
                            task_id=task.task_id, status=task.status)
                await self.book.set_status(task, self.restart_status, ended=True, reason="node_restart", error={
                    "code": "node_restart", "message": f"the node stopped while this {self.noun} ran "
                                                       f"(last status {task.status!r})"})

    def collect_kinds(self) -> None:
        for provided in getattr(self.node.pm.hook, self.kinds_hook)(node=self.node):
            for kind in provided or []:
                if kind.name in self.kinds:
                    raise MediagateError(f"two plugins provide {self.noun} kind {kind.name!r}")
                self.kinds[kind.name] = kind

    def kind(self, name: str) -> Any:
        kind = self.kinds.get(name)
        if kind is None:
            raise ValidationFailed(f"unknown {self.noun} kind {name!r}; available: {', '.join(sorted(self.kinds))}",
                                   field="kind")
        return kind

    async def launch(self, room: Room, request: BaseModel) -> Task:
        """Create the task and start the kind's runner; a start failure is recorded and raised."""
        kind = self.kind(request.kind)  # type: ignore[attr-defined]
        kind.validate(request, self.node)
        task = Task(self.id_prefix + secrets.token_hex(8), self.noun, room.room_id, request.model_dump(mode="json"))
        await self.book.add(task)
        try:
            task.runner = await kind.start(task, request, room, self.node)
        except MediagateError as exc:
            await self.book.set_status(task, "failed", error=exc.to_dict()["error"], ended=True)
            raise
        except Exception as exc:
            log.exception(f"{self.noun} failed to start", task_id=task.task_id)
            await self.book.set_status(task, "failed", error={"code": "start_failed", "message": str(exc)},
                                       ended=True)
            raise Unprocessable(f"{self.noun} failed to start: {exc}", code=f"{self.noun}_start_failed") from exc
        await self.book.set_status(task, self.running_status)
        self.node.events.emit(self.book.event_names["started"], room.room_id, **{f"{self.noun}_id": task.task_id},
                              kind=task.spec.get("kind"), **self.started_data(task))
        return task

    def started_data(self, task: Task) -> dict[str, Any]:
        return {}

    def get(self, task_id: str) -> Task:
        task = self.book.tasks.get(task_id)
        if task is None:
            raise NotFound(f"{self.noun} {task_id!r} does not exist", code=f"{self.noun}_not_found",
                           field=f"{self.noun}_id")
        return task

    def active(self, task_id: str) -> Task:
        task = self.get(task_id)
        if not task.active:
            raise Unprocessable(f"{self.noun} {task_id!r} has ended", code=f"{self.noun}_ended")
        return task

    def list(self, room_id: str | None = None) -> list[Task]:
        return [t for t in self.book.tasks.values() if room_id is None or t.room_id == room_id]

    def final_status(self, reason: str) -> str:
        return "complete"

    def ended_data(self, task: Task, reason: str) -> dict[str, Any]:
        """Extra fields of the ended event when a task is stopped (a kind's final report)."""
        return {}

    async def stop(self, task_id: str, reason: str = "api", error: dict[str, Any] | None = None) -> Task:
        """Stop the runner and end the task with its report; `error` says why when a runner
        ends its own task for a fault (the files so far are still reported)."""
        task = self.get(task_id)
        if not task.active:
            return task
        if self.ending_status:
            await self.book.set_status(task, self.ending_status)
        try:
            task.result.update(await task.runner.stop())
            await self.book.set_status(task, self.final_status(reason), ended=True, reason=reason, error=error,
                                       **self.ended_data(task, reason))
        except Exception as exc:
            log.exception(f"{self.noun} failed while stopping", task_id=task_id)
            await self.book.set_status(task, "failed", error={"code": "stop_failed", "message": str(exc)},
                                       ended=True)
        return task

    async def ended(self, task: Task, status: str = "complete", **data: Any) -> None:
        """For runners: the task ended by itself (end of file, publisher left, kicked)."""
        if task.active:
            await self.book.set_status(task, status, ended=True, **data)

    async def fail(self, task: Task, code: str, message: str) -> None:
        """For runners: the task cannot go on."""
        if task.active:
            await self.book.set_status(task, "failed", error={"code": code, "message": message}, ended=True)

    async def set_status(self, task: Task, status: str, **data: Any) -> None:
        await self.book.set_status(task, status, **data)

    async def _room_closed(self, room: Room, reason: str) -> None:
        for task in self.list(room.room_id):
            if task.active:
                await self.stop(task.task_id, "room_closed")

    async def shutdown(self) -> None:
        for task in list(self.book.tasks.values()):
            if task.active:
                await self.stop(task.task_id, "node_shutdown")

    def status_counts(self) -> dict[str, int]:
        return self.book.status_counts()
