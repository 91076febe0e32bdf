"""Tasks outlive the process: a real ``mediagate serve`` is SIGKILLed mid-recording and started
again on the same data dir (the tasks it left running end with reason ``node_restart``), then
stopped cleanly and started again (every task, with its file list, is still answered)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.gateway_process import Gateway
from tests.e2e.helpers import free_port

pytestmark = pytest.mark.e2e


def start_tasks(gw: Gateway, room: str) -> tuple[str, str]:
    ingress = gw.ok("POST", f"/v1/rooms/{room}/ingress", {
        "kind": "test", "identity": f"{room}-src", "pattern": {"color": "00FF00", "tone_hz": 600,
                                                             "width": 160, "height": 120, "fps": 10}}, 201)
    egress = gw.ok("POST", f"/v1/rooms/{room}/egress", {
        "kind": "record", "record": {"formats": ["mp4"]},
        "encoding": {"width": 320, "height": 240, "fps": 10, "video_kbps": 300}}, 201)
    gw.wait_for(f"/v1/egress/{egress['egress_id']}", "status", "active")
    return ingress["ingress_id"], egress["egress_id"]


@pytest.fixture
def gateways(tmp_path: Path):
    started: list[Gateway] = []
    port = free_port()

    def start() -> Gateway:
        gw = Gateway(tmp_path / "data", port, tmp_path / "gateway.log")
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


def test_tasks_are_answered_after_a_sigkill_and_after_a_clean_restart(gateways: Any, tmp_path: Path) -> None:
    gw = gateways()
    gw.ok("POST", "/v1/rooms", {"room_id": "crash", "empty_timeout_s": 0}, 201)
    gw.ok("POST", "/v1/rooms", {"room_id": "calm", "empty_timeout_s": 0}, 201)
    crash_in, crash_eg = start_tasks(gw, "crash")
    time.sleep(1.0)  # some media flows
    gw.kill()

    gw = gateways()
    egress = gw.ok("GET", f"/v1/egress/{crash_eg}")
    assert egress["status"] == "aborted" and egress["ended_at"] is not None, egress
    assert egress["error"]["code"] == "node_restart", egress
    assert [h["status"] for h in egress["history"]][-2:] == ["active", "aborted"], egress["history"]
    ingress = gw.ok("GET", f"/v1/ingress/{crash_in}")
    assert ingress["status"] == "failed" and ingress["error"]["code"] == "node_restart", ingress
    assert ingress["participant_id"], ingress
    assert [t["egress_id"] for t in gw.ok("GET", "/v1/rooms/crash/egress")["egress"]] == [crash_eg]
    assert [t["ingress_id"] for t in gw.ok("GET", "/v1/rooms/crash/ingress")["ingress"]] == [crash_in]
    # a record of a past process is read-only: stopping answers the final state, updating is refused
    assert gw.ok("DELETE", f"/v1/egress/{crash_eg}")["status"] == "aborted"
    status, body = gw.call("PATCH", f"/v1/egress/{crash_eg}", {"urls": []})
    assert status == 422 and body["error"]["code"] == "egress_ended", body
    log = (tmp_path / "gateway.log").read_text()
    assert log.count("was running when the node stopped abruptly") == 2, log

    calm_in, calm_eg = start_tasks(gw, "calm")
    time.sleep(1.0)
    stopped = gw.ok("DELETE", f"/v1/egress/{calm_eg}")
    assert stopped["status"] == "complete" and len(stopped["files"]) == 1, stopped
    gw.stop()

    gw = gateways()
    again = gw.ok("GET", f"/v1/egress/{calm_eg}")
    assert again["status"] == "complete" and again["files"] == stopped["files"], again
    assert Path(again["files"][0]["path"]).stat().st_size == again["files"][0]["size"] > 0
    ingress = gw.ok("GET", f"/v1/ingress/{calm_in}")
    assert ingress["status"] == "complete" and ingress["ended_at"] is not None, ingress  # node_shutdown
    # the crash records are unchanged by a second start (no second node_restart)
    assert gw.ok("GET", f"/v1/egress/{crash_eg}")["history"] == egress["history"]
    log = (tmp_path / "gateway.log").read_text()
    assert log.count("was running when the node stopped abruptly") == 2, log
