"""Long-running things a user can see (egress, ingress; later SIP calls, uploads): each is a
task with an id, a status machine, a history of status changes, errors and a final report.
Every change is an event and is written to the store."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from gateway.node import Node

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

        webhook = self.node.pm.get_plugin("webhook")
        if webhook is None or not hasattr(webhook, "deliver"):
            log.warning("task has a callback_url but the webhook plugin is disabled", task_id=task.task_id)
            return
        event = Event(name, task.room_id, {f"{self.kind}_id": task.task_id, "status": status, "error": error, **data})
        webhook.deliver(url, event)

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for task in self.tasks.values():
            counts[task.status] = counts.get(task.status, 0) + 1
        return counts
