"""A push URL's state machine against servers that refuse, or accept and never answer."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from fractions import Fraction

import pytest

from gateway.media.track import CodecInfo
from plugins.rtmp.client import CONNECT_FAILED, TIMED_OUT, parse_url
from plugins.rtmp.pusher import StreamFormat, UrlPusher

AUDIO = CodecInfo("aac", Fraction(1, 48000), sample_rate=48000, channels=2, extradata=b"\x11\x90")


def run(url: str, window: float = 1.0) -> tuple[UrlPusher, list[tuple[str, dict]]]:
    reports: list[tuple[str, dict]] = []
    pusher = UrlPusher(url, StreamFormat(None, AUDIO), lambda u, state, **data: reports.append((state, data)),
                       window_s=window, connect_timeout=0.5, send_timeout=0.5, queue_packets=16)
    pusher.start()
    pusher.join(timeout=20)
    assert not pusher.is_alive()
    return pusher, reports


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_refused_url_goes_connecting_failure_idle() -> None:
    pusher, reports = run(f"rtmp://127.0.0.1:{free_port()}/live/x")
    assert [state for state, _ in reports] == ["connecting", "failure", "idle"]
    assert reports[1][1]["errcode"] == CONNECT_FAILED and pusher.reconnects >= 1


def test_server_that_never_answers_times_out_into_failure() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                accepted.append(server.accept()[0])  # and never a byte back

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        _, reports = run(f"rtmp://127.0.0.1:{server.getsockname()[1]}/live/x")
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()
    assert [state for state, _ in reports] == ["connecting", "failure", "idle"]
    assert reports[1][1]["errcode"] == TIMED_OUT and accepted


def test_stop_while_connecting_disconnects() -> None:
    reports: list[str] = []
    pusher = UrlPusher(f"rtmp://127.0.0.1:{free_port()}/live/x", StreamFormat(None, AUDIO),
                       lambda u, state, **data: reports.append(state), window_s=30, connect_timeout=0.5,
                       send_timeout=0.5, queue_packets=16)
    pusher.start()
    time.sleep(0.3)
    pusher.stop()
    pusher.join(timeout=10)
    assert reports[0] == "connecting" and reports[-2:] == ["disconnecting", "idle"] and "failure" not in reports


@pytest.mark.parametrize("url", ["http://h/live/x", "rtmp:///live/x", "rtmp://h/live", "rtmp://h:99999/a/b",
                                 "rtmp://h/"])
def test_bad_urls(url: str) -> None:
    with pytest.raises(ValueError):
        parse_url(url)


def test_url_parts() -> None:
    url = parse_url("rtmps://cdn.example:4443/app/inst/key?auth=1")
    assert (url.scheme, url.host, url.port, url.app, url.stream) == ("rtmps", "cdn.example", 4443, "app/inst",
                                                                    "key?auth=1")
    assert parse_url("rtmp://h/live/k").port == 1935
