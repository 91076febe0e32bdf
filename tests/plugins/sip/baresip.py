"""A baresip (Debian baresip 1.0) instance for tests: its own config folder, an account that
registers with the node and auto-answers, a WAV tone as its microphone, and the sndfile
module recording what it hears.

Traps: the account URI needs ``;transport=udp`` (without it REGISTER fails locally with
"Function not implemented"); codec modules must load before account.so or the account's
``audio_codecs`` are "not found"; ``net_interface`` must be an IP."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import tempfile
import wave
from pathlib import Path

import numpy as np


def write_tone(path: Path, hz: float, seconds: float = 30.0, rate: int = 8000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    samples = (np.sin(2 * np.pi * hz * t) * 0.3 * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())


class Baresip:
    def __init__(self, sip_port: int, node_port: int, username: str, password: str, tone_hz: float,
                 codec: str = "PCMU") -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="baresip-"))
        self.records = self.dir / "records"
        self.records.mkdir()
        tone = self.dir / "tone.wav"
        write_tone(tone, tone_hz)
        modules = ["g711.so", "g722.so", "aufile.so", "sndfile.so", "alsa.so", "account.so"]  # codecs before accounts
        config = [f"sip_listen 127.0.0.1:{sip_port}", "net_interface 127.0.0.1", "dns_server 127.0.0.1:53",
                  f"audio_source aufile,{tone}", "audio_player alsa,null", "audio_alert alsa,null",
                  "ausrc_srate 8000", "auplay_srate 8000", "ausrc_channels 1", "auplay_channels 1",
                  "module_path /usr/lib/baresip/modules", *(f"module {m}" for m in modules),
                  f"snd_path {self.records}", "rtp_ports 40000-49999", "audio_buffer 20-160"]
        (self.dir / "config").write_text("\n".join(config) + "\n")
        (self.dir / "accounts").write_text(
            f"<sip:{username}@127.0.0.1:{node_port};transport=udp>;auth_pass={password};answermode=auto;regint=60;"
            f"audio_codecs={codec}\n")
        (self.dir / "contacts").write_text("")
        self.proc: asyncio.subprocess.Process | None = None
        self.log = self.dir / "baresip.log"

    async def start(self, seconds: int = 60) -> Baresip:
        out = self.log.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            "baresip", "-s", "-f", str(self.dir), "-t", str(seconds), cwd=self.dir, stdin=subprocess.DEVNULL,
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                os.killpg(self.proc.pid, 15)
                await asyncio.wait_for(self.proc.wait(), 10)
            except (ProcessLookupError, TimeoutError):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, 9)

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]
