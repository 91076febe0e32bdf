"""CDN push resilience against nginx-rtmp: an outage of ~10 s is recovered (running ->
recovering -> running, re-reported while it lasts); a URL that never answers ends in failure
after the window while the live URL keeps delivering; PATCH urls starts new URLs, stops missing
ones and leaves kept ones alone; PATCH layout changes the picture without reconnecting."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.rtmp_gateway import Gateway, assert_colour, decode, gateway_factory, wait_until  # noqa: F401
from tests.e2e.rtmp_peers import NginxRtmp, ffmpeg_read, kill, nginx_rtmp  # noqa: F401

pytestmark = pytest.mark.e2e
SMALL = {"width": 320, "height": 240, "fps": 15, "video_kbps": 300, "gop_s": 0.5}  # nginx starts viewers at a keyframe
CANVAS = {"width": 320, "height": 240, "fps": 15}


async def read_frames(url: str, out: Path, seconds: float = 2) -> list:
    reader = ffmpeg_read(url, out, seconds=seconds)
    try:
        assert await asyncio.to_thread(reader.wait, 90) == 0, reader.stderr.read() if reader.stderr else ""
    finally:
        kill(reader)
    frames, _, _ = await asyncio.to_thread(decode, out)
    return frames


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP server that accepts and never answers (a CDN that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    stop = threading.Event()
    held: list[socket.socket] = []

    def accept() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                held.append(server.accept()[0])
    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"rtmp://127.0.0.1:{server.getsockname()[1]}/live/hang"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


async def test_cdn_outage_recovers(gateway_factory, tmp_path: Path) -> None:  # noqa: F811
    gw = await gateway_factory("plugins.rtmp.reconnect_window_s=40", "plugins.rtmp.report_interval_s=2")
    cdn = NginxRtmp(tmp_path / "nginx").start()
    try:
        await gw.room("out", canvas=CANVAS)
        await gw.call("POST", "/v1/rooms/out/ingress", 201, kind="test", identity="red",
                      pattern={"color": "FF0000", "width": 160, "height": 120, "fps": 15})
        url = cdn.url("show")
        push = await gw.push("out", [url], encoding=SMALL)
        egress_id = push["egress_id"]
        await gw.wait_state(egress_id, url, "running")
        cdn.stop()
        await gw.wait_state(egress_id, url, "recovering")
        await asyncio.sleep(10)  # the outage
        repeats = [e for e in gw.named("egress.status", egress_id=egress_id, url=url) if e.data.get("repeat")]
        assert repeats and all(e.data["state"] == "recovering" for e in repeats)
        cdn.start()

        async def back() -> bool:
            return gw.url_states(egress_id, url)[-1:] == ["running"]
        await wait_until(back, "running again after the outage")
        assert gw.url_states(egress_id, url) == ["connecting", "running", "recovering", "running"]
        frames = await read_frames(url, tmp_path / "after.flv")
        assert len(frames) >= 8
        assert_colour(frames[-1], (255, 0, 0), (0.3, 0.3, 0.7, 0.7))
        details = await gw.egress(egress_id)
        assert details["outputs"][0]["reconnects"] >= 1 and details["outputs"][0]["state"] == "running"
        # this push followed the room layout: a layout of its own moves it to its own composite,
        # on the same connection
        own = {"canvas": {**CANVAS, "background": {"color": "0000FF"}}, "template": "custom",
               "regions": [{"source": {"participant": "red"}, "x": 0, "y": 0, "w": 0.5, "h": 0.5,
                            "units": "fraction", "fit": "fill"}]}
        response = await gw.client.patch(f"/v1/egress/{egress_id}", json={"layout": own}, headers=gw.auth)
        assert response.status == 200, await response.text()
        frames = await read_frames(url, tmp_path / "own.flv")
        assert_colour(frames[-1], (255, 0, 0), (0.05, 0.05, 0.45, 0.45))
        assert_colour(frames[-1], (0, 0, 255), (0.55, 0.55, 0.95, 0.95))
        assert set(gw.node.rooms.rooms["out"].media.composites) == {f"egress:{egress_id}"}
        assert gw.url_states(egress_id, url) == ["connecting", "running", "recovering", "running"]
        await gw.call("DELETE", f"/v1/egress/{egress_id}", 200)
        assert gw.url_states(egress_id, url)[-2:] == ["disconnecting", "idle"]
    finally:
        cdn.stop()


async def test_dead_url_fails_alone_and_urls_and_layout_update_live(gateway_factory, nginx_rtmp: NginxRtmp,  # noqa: F811
                                                                    silent_server: str, tmp_path: Path) -> None:
    gw = await gateway_factory("plugins.rtmp.reconnect_window_s=3", "plugins.rtmp.connect_timeout_s=1",
                               "plugins.rtmp.report_interval_s=1")
    await gw.room("two", canvas=CANVAS)
    for name, colour in (("red", "FF0000"), ("blue", "0000FF")):
        await gw.call("POST", "/v1/rooms/two/ingress", 201, kind="test", identity=name,
                      pattern={"color": colour, "width": 160, "height": 120, "fps": 15, "tone_hz": None})
    layout = {"canvas": CANVAS, "template": "custom",
              "regions": [{"source": {"participant": "red"}, "x": 0, "y": 0, "w": 1, "h": 1, "units": "fraction",
                           "fit": "fill"}]}
    live, live2 = nginx_rtmp.url("live"), nginx_rtmp.url("live2")
    push = await gw.push("two", [live, silent_server], encoding=SMALL, layout=layout)
    egress_id = push["egress_id"]
    await gw.wait_state(egress_id, silent_server, "failure", timeout=60)
    await gw.wait_state(egress_id, silent_server, "idle")
    assert gw.url_states(egress_id, silent_server) == ["connecting", "failure", "idle"]
    failure = gw.named("egress.status", egress_id=egress_id, url=silent_server, state="failure")[0]
    assert failure.data["errcode"] == 3  # timed out
    assert gw.url_states(egress_id, live) == ["connecting", "running"]
    frames = await read_frames(live, tmp_path / "live.flv")  # the live URL never noticed
    assert len(frames) >= 8
    assert_colour(frames[-1], (255, 0, 0), (0.1, 0.1, 0.9, 0.9))

    # PATCH urls: the dead one goes, a new one starts, the kept one is untouched
    sent_before = (await gw.egress(egress_id))["outputs"][0]["packets_sent"]
    response = await gw.client.patch(f"/v1/egress/{egress_id}", json={"urls": [live, live2]}, headers=gw.auth)
    assert response.status == 200, await response.text()
    await gw.wait_state(egress_id, live2, "running")
    outputs = {o["url"]: o for o in (await gw.egress(egress_id))["outputs"]}
    assert set(outputs) == {live, live2}
    assert outputs[live]["reconnects"] == 0 and outputs[live]["packets_sent"] >= sent_before

    # PATCH layout: blue instead of red, on the same connections
    blue = {**layout, "regions": [{**layout["regions"][0], "source": {"participant": "blue"}}]}
    response = await gw.client.patch(f"/v1/egress/{egress_id}", json={"layout": blue}, headers=gw.auth)
    assert response.status == 200, await response.text()
    started = time.monotonic()
    frames = await read_frames(live, tmp_path / "blue.flv")
    assert_colour(frames[-1], (0, 0, 255), (0.1, 0.1, 0.9, 0.9))
    frames2 = await read_frames(live2, tmp_path / "blue2.flv")
    assert_colour(frames2[-1], (0, 0, 255), (0.1, 0.1, 0.9, 0.9))
    assert time.monotonic() - started < 600
    assert gw.url_states(egress_id, live) == ["connecting", "running"]  # never reconnected
    await gw.call("DELETE", f"/v1/egress/{egress_id}", 200)


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def test_rtmps_push_through_a_tls_front(gateway_factory, nginx_rtmp: NginxRtmp,  # noqa: F811
                                              tmp_path: Path) -> None:
    """rtmps://: TLS to a front (an asyncio TLS terminator before nginx, as CDNs run them), the
    certificate checked against the configured CA; a test source's frames, transcoded, reach nginx."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await asyncio.to_thread(subprocess.run, [
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
        "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)

    async def front(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", nginx_rtmp.port)
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_server(front, "127.0.0.1", 0, ssl=context)
    port = server.sockets[0].getsockname()[1]
    try:
        gw = await gateway_factory(f'plugins.rtmp.tls_ca_file="{cert}"')
        await gw.room("tls", canvas=CANVAS)
        await gw.call("POST", "/v1/rooms/tls/ingress", 201, kind="test", identity="red",
                      pattern={"color": "FF0000", "width": 160, "height": 120, "fps": 15})
        url = f"rtmps://127.0.0.1:{port}/live/secure"
        # a participant whose tracks are raw frames: transcoded through its own composite
        push = await gw.push("tls", [url], encoding=SMALL, source={"participant": "red"})
        assert push["mode"] == "transcode"
        await gw.wait_state(push["egress_id"], url, "running")
        frames = await read_frames(nginx_rtmp.url("secure"), tmp_path / "secure.flv")
        assert len(frames) >= 8
        assert_colour(frames[-1], (255, 0, 0), (0.3, 0.3, 0.7, 0.7))
        await gw.call("DELETE", f"/v1/egress/{push['egress_id']}", 200)
    finally:
        server.close()
