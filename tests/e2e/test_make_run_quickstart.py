"""`make run` answers /healthz, and the README's curl quickstart works exactly as written."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest

from tests.e2e.helpers import REPO, ServerProcess, free_port

pytestmark = pytest.mark.e2e


def quickstart_script() -> str:
    text = (REPO / "README.md").read_text()
    match = re.search(r"<!-- quickstart -->\s*```sh\n(.*?)```", text, re.S)
    assert match, "README has no quickstart block"
    return match.group(1)


@pytest.fixture
def server(tmp_path: Path):
    port = free_port()
    env = {"MEDIAGATE_NODE__DATA_DIR": str(tmp_path / "data"), "MEDIAGATE_HTTP__PORT": str(port),
           "MEDIAGATE_HTTP__HOST": "127.0.0.1",
           # the edges' listeners on free ports: never a running gateway's 1935 / 5060
           "MEDIAGATE_PLUGINS__RTMP__PORT": "0", "MEDIAGATE_PLUGINS__RTMP__HOST": "127.0.0.1",
           "MEDIAGATE_PLUGINS__SIP__PORT": "0"}
    proc = ServerProcess(["make", "--no-print-directory", "run"], env).wait_ready()
    yield proc
    proc.stop()


def test_make_run_serves_and_quickstart_works(server: ServerProcess, tmp_path: Path) -> None:
    status, body = server.get("/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    assert server.token, "the banner must print a ready-to-use token"
    status, _ = server.get("/v1/rooms", server.token)
    assert status == 200

    work = tmp_path / "work"
    work.mkdir()
    result = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", quickstart_script()], cwd=work,
                            env={"PATH": "/usr/bin:/bin", "MG": server.url, "TOKEN": server.token},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    stopped = [json.loads(line) for line in result.stdout.splitlines() if line.startswith('{"egress_id"')]
    assert stopped and stopped[-1]["status"] == "complete", result.stdout
    recording = Path(stopped[-1]["files"][0]["path"])
    assert recording.is_relative_to(tmp_path / "data" / "recordings" / "demo")

    # the recording holds the two sources side by side: red on the left, blue on the right
    with av.open(str(recording)) as container:
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    assert len(frames) > 30
    last = frames[-1].astype(int)
    assert np.abs(last[360, 320] - [255, 0, 0]).max() < 40
    assert np.abs(last[360, 960] - [0, 0, 255]).max() < 40
    status, _ = server.get(f"/v1/storage/local/{stopped[-1]['files'][0]['key']}", server.token)
    assert status == 200


def test_cli_inspects_the_running_node(server: ServerProcess) -> None:
    import sys

    def mediagate(*args: str) -> dict:
        result = subprocess.run([sys.executable, "-m", "gateway", *args, "--url", server.url, "--token", server.token],
                                capture_output=True, text=True, timeout=60, cwd=REPO)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    status = mediagate("status")
    assert status["health"]["status"] == "ok" and status["ready"]["checks"]["store"] is True
    assert status["nodes"][0]["rooms"] == 0
    server.post("/v1/rooms", {"room_id": "cli"}, server.token)
    rooms = mediagate("rooms")
    assert rooms["room_count"] == 1 and rooms["rooms"][0]["room_id"] == "cli"
    assert mediagate("egress", "cli") == {"egress": []}
