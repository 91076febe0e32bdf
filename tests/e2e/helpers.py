"""Running a real ``mediagate`` process for end-to-end tests."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A gateway started by a command line; its banner gives the URL and the token."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path = REPO) -> None:
        self.output: list[str] = []
        self.proc = subprocess.Popen(command, cwd=cwd, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.url = ""
        self.token = ""

    def wait_ready(self, timeout: float = 240) -> ServerProcess:
        """Read the banner (make may first install packages); fail with the output on exit."""
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise AssertionError("server exited:\n" + "".join(self.output))
            self.output.append(line)
            if match := re.search(r"serving on (http://\S+)", line):
                self.url = match.group(1)
            if match := re.search(r"export TOKEN=(\S+)", line):
                self.token = match.group(1)
                return self
        raise AssertionError("no banner in time:\n" + "".join(self.output))

    def get(self, path: str, token: str | None = None) -> tuple[int, bytes]:
        return self.request("GET", path, token)

    def post(self, path: str, body: dict, token: str | None = None) -> tuple[int, bytes]:
        return self.request("POST", path, token, json.dumps(body).encode())

    def request(self, method: str, path: str, token: str | None = None, data: bytes | None = None
                ) -> tuple[int, bytes]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def stop(self) -> str:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return "".join(self.output)
