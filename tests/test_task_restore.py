"""Tasks come back from the store on start; the ones a dead process left running end with
reason node_restart and one event each (the process-level test is tests/e2e/test_tasks_survive_restart.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gateway import events as ev
from gateway.node import Node


async def test_running_tasks_left_by_a_crash_end_with_an_event_each(make_config: Callable[..., Any]) -> None:
    config = make_config('node.id="n1"')
    first = Node(config)
    await first.start()
    store = first.store
    for task_id, kind, status in [("EG_live", "egress", "active"), ("EG_done", "egress", "complete"),
                                  ("IN_live", "ingress", "publishing"), ("IN_boot", "ingress", "starting"),
                                  ("EG_other", "egress", "active")]:
        await store.add_task({"task_id": task_id, "kind": kind, "room_id": "r", "status": status,
                              "spec": {"kind": "test"}, "node_id": "n2" if task_id == "EG_other" else "n1",
                              "result": {"files": [{"filename": "a.mp4"}]} if task_id == "EG_done" else {},
                              "ended_at": 1.0 if status == "complete" else None})
    await first.stop()

    second = Node(config)
    seen = second.events.subscribe(None, maxsize=100)
    await second.start()
    try:
        events = []
        while not seen.queue.empty():
            events.append(seen.queue.get_nowait())
        ended = sorted((e.event, e.data.get("egress_id") or e.data.get("ingress_id"), e.data["status"],
                        e.data["reason"]) for e in events if e.event in (ev.EGRESS_ENDED, ev.INGRESS_ENDED))
        assert ended == [(ev.EGRESS_ENDED, "EG_live", "aborted", "node_restart"),
                         (ev.INGRESS_ENDED, "IN_boot", "failed", "node_restart"),
                         (ev.INGRESS_ENDED, "IN_live", "failed", "node_restart")]
        assert second.egress.get("EG_done").describe()["files"] == [{"filename": "a.mp4"}]
        assert second.egress.get("EG_done").status == "complete"
        assert {t.task_id for t in second.egress.list("r")} == {"EG_live", "EG_done"}  # not another node's
        row = await second.store.get_task("EG_live")
        assert row["status"] == "aborted" and row["ended_at"] is not None
        assert row["result"]["error"]["code"] == "node_restart"
        assert (await second.store.get_task("EG_other"))["status"] == "active"
    finally:
        seen.close()
        await second.stop()
