"""The example third-party plugin, pip-installed on its own, loads through its entry point
and its route answers on a real running node."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.helpers import REPO, ServerProcess, free_port

pytestmark = pytest.mark.e2e


def test_example_plugin_installs_loads_and_answers(tmp_path: Path) -> None:
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(REPO / "contrib" / "mediagate-example-plugin")], check=True)
    port = free_port()
    env = {"PYTHONPATH": os.pathsep.join([str(target), str(REPO)]),
           "MEDIAGATE_NODE__DATA_DIR": str(tmp_path / "data"), "MEDIAGATE_HTTP__PORT": str(port),
           "MEDIAGATE_HTTP__HOST": "127.0.0.1", "MEDIAGATE_PLUGINS__EXAMPLE__GREETING": "bonjour"}
    server = ServerProcess([sys.executable, "-m", "gateway", "serve"], env).wait_ready(timeout=60)
    try:
        status, body = server.get("/v1/nodes", server.token)
        assert status == 200
        assert "example" in json.loads(body)["nodes"][0]["plugins"]
        status, _ = server.post("/v1/rooms", {"room_id": "plugin-room"}, server.token)
        assert status == 201
        status, body = server.get("/example/hello")
        assert status == 200
        answer = json.loads(body)
        assert answer["greeting"] == "bonjour"
        assert answer["events_seen"] >= 1
        assert answer["last_event"] == "room.created"
    finally:
        server.stop()
