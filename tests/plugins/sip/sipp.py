"""Running sipp (Debian sip-tester) against the node in tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
SCENARIOS = REPO / "contrib" / "sipp"
PCAPS = Path("/usr/share/sip-tester")


def free_port(kind: int = socket.SOCK_DGRAM) -> int:
    """A port free for UDP and TCP both (sipp binds the two)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, kind) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                tcp.bind(("127.0.0.1", port))
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
                    socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp2:
                udp.bind(("127.0.0.1", port))
                udp2.bind(("127.0.0.1", port + 1)) if port < 65535 else None
            return port
        except OSError:
            continue
    raise RuntimeError("no free port")


def sipp_args(scenario: str, *args: str, port: int, media_port: int | None = None) -> list[str]:
    """`scenario`: a built-in name (uac_pcap) or a file in contrib/sipp (ends in .xml)."""
    where = ["-sf", str(SCENARIOS / scenario)] if scenario.endswith(".xml") else ["-sn", scenario]
    out = ["sipp", *where, "-i", "127.0.0.1", "-p", str(port), "-nostdin", "-trace_err", "-timeout", "60s"]
    if media_port is not None:
        out += ["-mp", str(media_port), "-mi", "127.0.0.1"]
    return out + list(args)


class Sipp:
    """A sipp process in its own folder (``./pcap`` links to the sip-tester pcaps)."""

    def __init__(self, argv: list[str]) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="sipp-"))
        (self.dir / "pcap").symlink_to(PCAPS)
        self.argv = argv
        self.proc: asyncio.subprocess.Process | None = None
        self.stdout = b""

    async def start(self) -> Sipp:
        self.proc = await asyncio.create_subprocess_exec(*self.argv, cwd=self.dir, stdout=subprocess.PIPE,
                                                         stderr=subprocess.STDOUT, start_new_session=True)
        return self

    async def wait(self, timeout: float = 90) -> int:
        assert self.proc is not None
        try:
            out, _ = await asyncio.wait_for(self.proc.communicate(), timeout)
        except TimeoutError:
            self.kill()
            out, _ = await self.proc.communicate()
        self.stdout = out or b""
        return self.proc.returncode if self.proc.returncode is not None else -1

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, 9)

    def errors(self) -> str:
        logs = [p.read_text(errors="replace")[-3000:] for p in self.dir.glob("*_errors.log")]
        return self.stdout.decode(errors="replace")[-3000:] + "\n".join(logs)


async def run_sipp(argv: list[str], timeout: float = 90) -> tuple[int, Sipp]:
    sipp = await Sipp(argv).start()
    code = await sipp.wait(timeout)
    return code, sipp


async def next_event(sub: Any, name: str, timeout: float = 30, **match: Any) -> Any:
    """The next event `name` on subscription `sub` whose data has every `match` item."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            raise AssertionError(f"no {name} {match} event in {timeout} s")
        try:
            event = await asyncio.wait_for(sub.get(), remaining)
        except TimeoutError:
            raise AssertionError(f"no {name} {match} event in {timeout} s") from None
        if event.event == name and all(event.data.get(k) == v for k, v in match.items()):
            return event


DIGIT_PCAP = {"*": "star", "#": "pound"}


def dtmf_scenario(path: Path, digits: str, *, hangup: str = "caller", gap_ms: int = 400,
                  first_ms: int = 1000, hold_ms: int = 1000) -> Path:
    """A uac that calls, then plays sip-tester's RFC 4733 pcaps for `digits` (one per gap).

    hangup="caller": it sends BYE; "callee": it waits for our BYE (a rejected PIN)."""
    template = (SCENARIOS / "uac_dtmf.xml").read_text()
    a, b = template.index("  <!-- DIGITS -->") + len("  <!-- DIGITS -->"), template.index("  <!-- CALLER HANGS UP -->")
    template = template[:a] + "\n" + template[b:]
    plays = []
    for i, digit in enumerate(digits):
        name = DIGIT_PCAP.get(digit, digit)
        plays.append(f'  <pause milliseconds="{first_ms if i == 0 else gap_ms}"/>\n'
                     f'  <nop><action><exec play_pcap_audio="pcap/dtmf_2833_{name}.pcap"/></action></nop>')
    body = template.replace("  <!-- DIGITS -->", "\n".join(plays))
    body = body.replace('  <!-- CALLER HANGS UP -->\n  <pause milliseconds="1000"/>',
                        f'  <!-- CALLER HANGS UP -->\n  <pause milliseconds="{hold_ms}"/>')
    if hangup == "callee":
        start, stop = body.index("  <!-- CALLER HANGS UP -->"), body.index("  <!-- END -->")
        body = body[:start] + CALLEE_HANGS_UP + body[stop:]
    path.write_text(body)
    return path


CALLEE_HANGS_UP = """  <recv request="BYE" timeout="60000"></recv>
  <send>
    <![CDATA[
      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0
    ]]>
  </send>
"""
