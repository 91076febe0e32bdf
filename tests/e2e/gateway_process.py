"""A real ``mediagate serve`` process on a given data dir and port for end-to-end tests: its
output goes to a file (nothing to drain), readiness is polled on /readyz, and an API token is
taken from a configured key (independent of what the startup banner prints)."""

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

from tests.e2e.helpers import REPO

ACCESS_KEY, SECRET_KEY = "e2e_access", "e2e-secret-value"
WAIT_S = 120.0  # generous: the machine is shared


class Gateway:
    """One ``mediagate serve`` process on a fixed data dir and port; output goes to a file."""

    def __init__(self, data_dir: Path, port: int, log: Path, *overrides: str) -> None:
        self.url = f"http://127.0.0.1:{port}"
        settings = [f'node.data_dir="{data_dir}"', f"http.port={port}", 'http.host="127.0.0.1"',
                    'node.id="e2e-node"', f'auth.api_keys={{"{ACCESS_KEY}" = "{SECRET_KEY}"}}',
                    "auth.bootstrap_key=false", 'log.level="info"',
                    # the edges' own listeners on free ports, never a running gateway's 1935 / 5060
                    "plugins.rtmp.port=0", 'plugins.rtmp.host="127.0.0.1"', "plugins.sip.port=0", *overrides]
        command = [sys.executable, "-m", "gateway", "serve"]
        for setting in settings:
            command += ["--set", setting]
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
        status, body = self.call("POST", "/v1/auth/token", {"access_key": ACCESS_KEY, "secret_key": SECRET_KEY})
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
