"""baresip (a real softphone) registers with the node as an account (digest; a wrong password
is refused), then the API dials it into a room with a 1 kHz test source. baresip plays its own
440 Hz tone and records what it hears: the room's mix minus itself — the 1 kHz tone only."""

from __future__ import annotations

import asyncio
import socket
import wave
from typing import Any

import numpy as np
import pytest

from tests.plugins.sip.baresip import Baresip
from tests.plugins.sip.sipp import free_port, next_event

pytestmark = pytest.mark.e2e

ROOM_TONE = 1000.0
PHONE_TONE = 440.0


@pytest.fixture
async def node(make_node: Any) -> Any:
    return await make_node("plugins.sip.port=0", "plugins.sip.rtp_port_min=0", "plugins.sip.rtp_port_max=0",
                           "plugins.sip.rtp_timeout_s=0")


def port_pair() -> int:
    """An even port whose next is free too, for UDP and TCP: baresip binds its SIP port on UDP and
    TCP and the next one for TLS (a taken port + 1 once failed a loaded suite run)."""
    while True:
        port = free_port()
        if port % 2 == 0 and port < 65535 and all(_free(port + k, kind) for k in (0, 1)
                                                   for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM)):
            return port


def _free(port: int, kind: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def band(spectrum: np.ndarray, freqs: np.ndarray, hz: float) -> float:
    return float(spectrum[(freqs > hz - 15) & (freqs < hz + 15)].max())


async def test_baresip_registers_and_hears_the_room_minus_itself(node: Any, client: Any,
                                                                 auth: dict[str, str]) -> None:
    service = node.pm.get_plugin("sip").service
    response = await client.post("/v1/sip/accounts", headers=auth, json={
        "username": "1001", "password": "s3cret", "send_codec": "PCMU", "recv_codec": "PCMU"})
    assert response.status == 201, await response.text()

    wrong = await Baresip(port_pair(), service.endpoint.port, "1001", "wrong", PHONE_TONE).start(seconds=6)
    try:
        await asyncio.wait_for(wrong.proc.wait(), 20)
    finally:
        await wrong.stop()
    assert service.registrar.failures >= 1, wrong.output()
    accounts = (await (await client.get("/v1/sip/accounts", headers=auth)).json())["accounts"]
    assert accounts[0]["registered"] is False

    await client.post("/v1/rooms", json={"room_id": "bare"}, headers=auth)
    response = await client.post("/v1/rooms/bare/ingress", headers=auth, json={
        "kind": "test", "identity": "tone", "video": False,
        "pattern": {"tone_hz": ROOM_TONE, "volume": 0.3}})
    assert response.status == 201, await response.text()
    phone = await Baresip(port_pair(), service.endpoint.port, "1001", "s3cret", PHONE_TONE).start(seconds=60)
    try:
        for _ in range(200):
            accounts = (await (await client.get("/v1/sip/accounts", headers=auth)).json())["accounts"]
            if accounts[0]["registered"]:
                break
            await asyncio.sleep(0.1)
        assert accounts[0]["registered"], phone.output()
        assert accounts[0]["registration"]["source"].startswith("udp:127.0.0.1:")
        with node.events.subscribe("bare") as sub:
            response = await client.post("/v1/rooms/bare/sip/calls", headers=auth, json={"to": "1001"})
            assert response.status == 201, await response.text()
            call = await response.json()
            while (await next_event(sub, "sip.call.state", timeout=30)).data["state"] != "connected":
                pass
            await asyncio.sleep(4)
            info = await (await client.get(f"/v1/sip/calls/{call['call_id']}", headers=auth)).json()
            assert info["media"]["packets_in"] > 50, info  # baresip's tone reached us
            await client.delete(f"/v1/sip/calls/{call['call_id']}", headers=auth)
            await next_event(sub, "participant.left", participant_id=call["participant_id"])
        for _ in range(100):
            files = list(phone.records.glob("*dec*.wav"))
            if files and files[0].stat().st_size > 8000:
                break
            await asyncio.sleep(0.1)
        await asyncio.sleep(1)
    finally:
        await phone.stop()
    assert files, phone.output()
    with wave.open(str(files[0])) as w:
        rate = w.getframerate()
        heard = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64)
        if w.getnchannels() == 2:
            heard = heard.reshape(-1, 2).mean(axis=1)
    heard = heard[len(heard) // 4:]
    assert len(heard) > rate, len(heard)
    spectrum = np.abs(np.fft.rfft(heard * np.hanning(len(heard))))
    freqs = np.fft.rfftfreq(len(heard), 1 / rate)
    floor = float(np.median(spectrum))
    assert band(spectrum, freqs, ROOM_TONE) > 100 * floor, (band(spectrum, freqs, ROOM_TONE), floor)
    assert band(spectrum, freqs, PHONE_TONE) < band(spectrum, freqs, ROOM_TONE) / 30  # not its own voice
