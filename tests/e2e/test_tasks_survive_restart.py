"""Tasks outlive the process: a real ``mediagate serve`` is SIGKILLed mid-recording and started
again on the same data dir (the tasks it left running end with reason ``node_restart``), then
stopped cleanly and started again (every task, with its file list, is still answered)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import REPO, free_port

pytestmark = pytest.mark.e2e

WAIT_S = 90.0  # generous: the machine is shared


class Gateway:
    """One ``mediagate serve`` process on a fixed data dir and port; output goes to a file."""

    def __init__(self, data_dir: Path, port: int, log: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        command = [sys.executable, "-m", "gateway", "serve",
                   "--set", f'node.data_dir="{data_dir}"', "--set", f"http.port={port}",
                   "--set", 'http.host="127.0.0.1"', "--set", 'node.id="restart-node"',
                   "--set", 'auth.api_keys={"rk" = "restart-secret"}', "--set", "auth.bootstrap_key=false",
                   "--set", 'log.level="info"']
        self.log = log
        self.proc = subprocess.Popen(command, cwd=REPO, stdout=log.open("a"), stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.token = ""
        self.wait_ready()

    def wait_ready(self) -> None:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "gateway exited:\n" + self.log.read_text()
            try:
                status, _ = self.call("GET", "/readyz")
                if status == 200:
                    break
            except OSError:
                pass
            time.sleep(0.2)
        else:
            raise AssertionError("gateway never became ready:\n" + self.log.read_text())
        status, body = self.call("POST", "/v1/auth/token", {"access_key": "rk", "secret_key": "restart-secret"})
        assert status == 200, body
        self.token = body["token"]

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                raw = response.read()
                return response.status, json.loads(raw) if raw else None
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read() or b"null")

    def ok(self, method: str, path: str, body: dict[str, Any] | None = None, status: int = 200) -> Any:
        got, answer = self.call(method, path, body)
        assert got == status, (method, path, got, answer)
        return answer

    def wait_for(self, path: str, key: str, value: Any) -> dict[str, Any]:
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            answer = self.ok("GET", path)
            if answer.get(key) == value:
                return answer
            time.sleep(0.2)
        raise AssertionError(f"{path} never had {key}={value!r}: {answer}")

    def kill(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.kill()


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
