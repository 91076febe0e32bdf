"""Real RTMP peers for end-to-end tests: nginx with libnginx-mod-rtmp as the CDN, and the
ffmpeg CLI as publisher and as viewer. Shared by the RTMP ingest/push and play-in tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.helpers import free_port

NGINX_MODULE = "/usr/lib/nginx/modules/ngx_rtmp_module.so"
NGINX_CONF = """load_module {module};
daemon off;
master_process off;
worker_processes 1;
error_log {dir}/error.log warn;
pid {dir}/nginx.pid;
events {{ worker_connections 256; }}
rtmp {{
    server {{
        listen 127.0.0.1:{port};
        chunk_size 4096;
        application live {{ live on; record off; wait_key on; }}
    }}
}}
"""


class NginxRtmp:
    """nginx-rtmp on a free loopback port; ``stop()``/``start()`` simulate a CDN outage."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        (self.dir / "nginx.conf").write_text(NGINX_CONF.format(module=NGINX_MODULE, dir=self.dir, port=self.port))
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, stream: str) -> str:
        return f"rtmp://127.0.0.1:{self.port}/live/{stream}"

    def start(self) -> NginxRtmp:
        self.proc = subprocess.Popen(["nginx", "-p", str(self.dir), "-e", str(self.dir / "error.log"),
                                      "-c", str(self.dir / "nginx.conf")], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"nginx exited: {self.proc.stderr.read().decode() if self.proc.stderr else ''}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        raise AssertionError("nginx-rtmp did not listen in time")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # a CDN that dies, not one that says goodbye
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def nginx_rtmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NginxRtmp]:
    server = NginxRtmp(tmp_path_factory.mktemp("nginx-rtmp")).start()
    yield server
    server.stop()


def ffmpeg_push(url: str, *, seconds: float, color: str = "red", tone_hz: float = 1000, size: str = "320x240",
                fps: int = 30, bframes: int = 2, realtime: bool = True, extra: list[str] | None = None,
                ) -> subprocess.Popen[bytes]:
    """ffmpeg publishing a solid colour and a sine tone as H.264 (with B-frames) + AAC over RTMP."""
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", *(["-re"] if realtime else []),
               "-f", "lavfi", "-i", f"color=c={color}:size={size}:rate={fps}",
               "-f", "lavfi", "-i", f"sine=frequency={tone_hz}:sample_rate=44100",
               "-t", str(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-bf", str(bframes),
               "-g", str(fps), "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "96k", *(extra or []), "-f", "flv", url]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def ffmpeg_read(url: str, out: Path, *, seconds: float, timeout: float = 60) -> subprocess.Popen[bytes]:
    """ffmpeg playing `url` from nginx and saving `seconds` of it unchanged (stream copy) to `out`."""
    command = ["ffmpeg", "-nostdin", "-loglevel", "error", "-rw_timeout", str(int(timeout * 1e6)), "-i", url,
               "-t", str(seconds), "-c", "copy", "-y", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def ffprobe(path: Path) -> dict[str, Any]:
    import json

    result = subprocess.run(["ffprobe", "-v", "error", "-show_streams", "-show_format", "-of", "json", str(path)],
                            capture_output=True, text=True, timeout=60, check=True)
    return json.loads(result.stdout)


def kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
