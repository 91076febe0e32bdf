"""CPU per G.711 leg in a mix-minus room: mediagate's SIP legs against Janus AudioBridge.

``python -m bench.bench_sip_media [--legs 10,100,300] [--seconds 10] [--rounds 3] [--janus-rate 16000]``
(also ``python -m bench bench_sip_media``, or ``python -m bench.bench_sip legs``).

For each N, the same RTP load generator drives N PCMU participants in one room, first on the
node (N real INVITEs, one room, every leg hears everyone but itself), then on Janus's
AudioBridge (Debian ``janus`` on loopback with a generated config: HTTP transport on a free
port, only the audiobridge plugin; a room with plain-RTP participants joined through the HTTP
API with ``rtp: {ip, port, payload_type}``). Each participant sends 50 packets/s of its own
tone and counts what it receives. Printed per N: each server's CPU per leg (from /proc, over the
measurement window after a warm-up; ``--rounds`` measurements of each, alternating, and the
ratio of the medians), the ratio against the 1.5x target, the packets/s each leg
received (the worst leg's and the median, and the worst one-second window), the load
generator's own CPU, and for 300+ legs the real-time verdict: every leg receives its mix at
50 packets/s (>= 97 % over the window, no one-second window of any leg under 90 %).

The load generator is a separate process (epoll, one connected socket per participant, one
send per leg per 20 ms); its CPU is counted apart from the server's. The machine may be shared:
compare the two servers' figures of the same run, and note the load average printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import importlib
import json
import multiprocessing as mp
import os
import re
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

CLK = os.sysconf("SC_CLK_TCK")
TARGET_RATIO = 1.5
REALTIME_LEGS = 300
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def proc_cpu(pid: int, part: slice = slice(11, 13)) -> float:
    """user + system CPU seconds of a process (part=slice(12, 13): system only)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[part]) / CLK


def _importable(fn: Callable) -> Callable:
    """`fn` from this module under its import name: run as ``python -m bench`` (runpy names it
    __main__), spawn could not pickle it."""
    return getattr(importlib.import_module("bench.bench_sip_media"), fn.__name__)


# ------------------------------------------------------------------------ load generator
def _load_main(conn, count: int) -> None:
    """The generator process: `count` sockets; sends a tone per leg at 50 pps, counts replies."""
    socks = []
    for _ in range(count):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind((HOST, 0))
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        socks.append(s)
    conn.send([s.getsockname()[1] for s in socks])
    remote = conn.recv()  # the server's RTP port of each leg
    for s, port in zip(socks, remote, strict=True):
        s.connect((HOST, port))
    from plugins.sip import g711
    t = np.arange(160) / 8000
    # a tone per leg, a multiple of 50 Hz so every 20 ms packet is the same
    bodies = [i.to_bytes(4, "big") + g711.encode((np.sin(2 * np.pi * (200 + 50 * (i % 60)) * t) * 4000)
                                                  .astype(np.int16), "PCMU").tobytes() for i in range(count)]
    sends = [s.send for s in socks]
    recvs = [s.recv for s in socks]
    received = np.zeros(count, dtype=np.int64)
    index = {s.fileno(): i for i, s in enumerate(socks)}
    poller = select.epoll()
    for s in socks:
        poller.register(s.fileno(), select.EPOLLIN)
    seq, deadline = 0, time.monotonic()
    while True:
        header = b"\x80\x00" + (seq & 0xFFFF).to_bytes(2, "big") + (seq * 160 & 0xFFFFFFFF).to_bytes(4, "big")
        for send, body in zip(sends, bodies, strict=True):
            try:  # noqa: SIM105 - a try is cheaper than suppress() in this loop
                send(header + body)
            except OSError:
                pass  # ECONNREFUSED from an earlier ICMP: the port is not open (yet)
        seq += 1
        deadline += 0.02
        if conn.poll():
            message = conn.recv()
            if message == "stop":
                return
            conn.send(received.copy())
        while True:
            wait = deadline - time.monotonic()
            events = poller.poll(max(0.0, wait))
            for fd, _ in events:  # level-triggered: one datagram per ready socket per poll
                i = index[fd]
                try:
                    recvs[i](2048)
                    received[i] += 1
                except OSError:
                    pass
            if wait <= 0 and not events:
                break
        if time.monotonic() - deadline > 0.2:  # far behind (a stalled machine): don't burst
            deadline = time.monotonic()


class LoadGen:
    def __init__(self, count: int) -> None:
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_importable(_load_main), args=(child, count), daemon=True)
        self.proc.start()
        self.ports: list[int] = self.conn.recv()

    def start(self, remote: list[int]) -> None:
        self.conn.send(remote)

    def counts(self) -> np.ndarray:
        self.conn.send("counts")
        return self.conn.recv()

    def cpu(self) -> float:
        return proc_cpu(self.proc.pid)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send("stop")
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()


# ------------------------------------------------------------------------ the node
def _node_main(conn, data_dir: str, max_calls: int) -> None:
    import gc

    from bench.bench_sip import start_sip_node

    pauses = {"start": 0.0, "total": 0.0, "max": 0.0}

    def on_gc(phase: str, _info: dict) -> None:  # the collector's pauses stop every thread
        now = time.perf_counter()
        if phase == "start":
            pauses["start"] = now
        else:
            pauses["total"] += now - pauses["start"]
            pauses["max"] = max(pauses["max"], now - pauses["start"])

    gc.callbacks.append(on_gc)

    async def run() -> None:
        node, service = await start_sip_node(data_dir, max_calls)
        conn.send(service.endpoint.port)
        while True:
            while not conn.poll():
                await asyncio.sleep(0.2)
            if conn.recv() != "stats":
                break
            engine, legs = service.engine, service.engine.legs
            room = node.rooms.rooms.get("bench")
            mixer = room.media.mixer if room is not None and room.media is not None else None
            reasons: dict[str, int] = {}
            for call in service.ended.values():
                reasons[call.reason] = reasons.get(call.reason, 0) + 1
            conn.send({"calls": len(service.calls), "ended": str(reasons),
                       "engine_ticks": engine.ticks, "engine_cpu": engine.tick_seconds,
                       "engine_load": f"{engine.load:.2f}",  # a level, not a count
                       "sent": sum(leg.packets_out for leg in legs), "received": sum(leg.packets_in for leg in legs),
                       "mix_dropped": sum(getattr(leg.mix, "dropped", 0) for leg in legs),
                       "skipped": sum(leg.skipped for leg in legs),
                       "mixer_ticks": getattr(mixer, "ticks", None),
                       "mixer_skipped": getattr(mixer, "skipped_ticks", None),
                       "gc_seconds": pauses["total"], "gc_max_ms": f"{pauses['max'] * 1000:.1f}"})
            pauses["max"] = 0.0  # the next answer's: the longest pause since this one
        await node.stop()

    asyncio.run(run())


INVITE = ("INVITE sip:bench@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKm{i}\r\n"
          "From: <sip:leg{i}@127.0.0.1>;tag=l{i}\r\nTo: <sip:bench@127.0.0.1>\r\nCall-ID: mleg{i}@bench\r\n"
          "CSeq: 1 INVITE\r\nContact: <sip:leg{i}@127.0.0.1:{me}>\r\nContent-Type: application/sdp\r\n"
          "Content-Length: {length}\r\n\r\n{sdp}")
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp} RTP/AVP 0\r\n"


class NodeServer:
    name = "mediagate"

    def __init__(self, count: int) -> None:
        self.dir = tempfile.mkdtemp(prefix="bench-sipm-")
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_importable(_node_main), args=(child, self.dir, count + 10), daemon=True)
        self.proc.start()
        self.port = self.conn.recv()
        self.pid = self.proc.pid

    def join(self, ports: list[int]) -> list[int]:
        """N INVITEs (SDP offering PCMU on the generator's ports); the node's RTP port of each."""
        sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sip.bind((HOST, 0))
        sip.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
        me = sip.getsockname()[1]
        remote = [0] * len(ports)
        for i, rtp_port in enumerate(ports):
            sdp = SDP.format(rtp=rtp_port)
            sip.sendto(INVITE.format(port=self.port, me=me, i=i, length=len(sdp), sdp=sdp).encode(),
                       (HOST, self.port))
            if i % 20 == 19:
                time.sleep(0.02)
        sip.settimeout(20)
        done = 0
        while done < len(ports):
            data = sip.recv(65535).decode(errors="replace")
            if not data.startswith("SIP/2.0 200") or "INVITE" not in data.split("CSeq:")[1].split("\r\n")[0]:
                if data.startswith("SIP/2.0 5") or data.startswith("SIP/2.0 4"):
                    raise RuntimeError(f"call refused: {data.splitlines()[0]}")
                continue
            i = int(re.search(r"Call-ID: mleg(\d+)@", data).group(1))
            if remote[i]:
                continue
            remote[i] = int(re.search(r"m=audio (\d+)", data).group(1))
            tag = re.search(r"To: [^\r\n]*tag=([^;\r\n]+)", data).group(1)
            ack = (f"ACK sip:bench@127.0.0.1:{self.port} SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKa{i}\r\n"
                   f"From: <sip:leg{i}@127.0.0.1>;tag=l{i}\r\nTo: <sip:bench@127.0.0.1>;tag={tag}\r\n"
                   f"Call-ID: mleg{i}@bench\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
            sip.sendto(ack.encode(), (HOST, self.port))
            done += 1
        self.sip = sip
        return remote

    def stats(self) -> dict:
        self.conn.send("stats")
        return self.conn.recv()

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.send("stop")
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------------ Janus AudioBridge
JANUS_LIB = "/usr/lib/x86_64-linux-gnu/janus"
JANUS_CONF = """general: {{
    configs_folder = "{conf}"
    plugins_folder = "{lib}/plugins"
    transports_folder = "{lib}/transports"
    events_folder = "{lib}/events"
    loggers_folder = "{lib}/loggers"
    debug_level = 2
    session_timeout = 0
    admin_secret = "{secret}"
}}
media: {{ rtp_port_range = "40000-60000" }}
nat: {{ ice_enforce_list = "127.0.0.1" }}
plugins: {{ disable = "{plugins}" }}
transports: {{ disable = "{transports}" }}
loggers: {{ disable = "libjanus_jsonlog.so" }}
events: {{ broadcast = false }}
"""
JANUS_HTTP = """general: {{ json = "plain" base_path = "/janus" http = true port = {port} https = false
    ip = "127.0.0.1" }}
admin: {{ admin_http = false admin_https = false }}
"""
JANUS_BRIDGE = 'general: { rtp_port_range = "40000-60000" local_ip = "127.0.0.1" }\n'


class JanusServer:
    name = "janus"

    def __init__(self, count: int, rate: int) -> None:
        self.dir = tempfile.mkdtemp(prefix="bench-janus-")
        self.http_port = free_port()
        others = sorted(p.name for p in Path(JANUS_LIB, "plugins").glob("*.so")
                        if "audiobridge" not in p.name)
        transports = sorted(p.name for p in Path(JANUS_LIB, "transports").glob("*.so") if "http" not in p.name)
        Path(self.dir, "janus.jcfg").write_text(JANUS_CONF.format(
            conf=self.dir, lib=JANUS_LIB, secret=os.urandom(8).hex(), plugins=",".join(others),
            transports=",".join(transports)))
        Path(self.dir, "janus.transport.http.jcfg").write_text(JANUS_HTTP.format(port=self.http_port))
        Path(self.dir, "janus.plugin.audiobridge.jcfg").write_text(JANUS_BRIDGE)
        self.log = open(Path(self.dir, "janus.log"), "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(["janus", "-C", f"{self.dir}/janus.jcfg", "-F", self.dir, "-o", "-N"],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.rate = rate
        deadline = time.monotonic() + 20
        while True:
            try:
                self.http = http.client.HTTPConnection(HOST, self.http_port, timeout=30)
                self._post("/janus", {"janus": "info"})
                break
            except OSError as error:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    log = Path(self.dir, "janus.log").read_text()[-2000:]
                    raise RuntimeError(f"janus did not start: {log}") from error
                time.sleep(0.2)

    def _post(self, path: str, body: dict) -> dict:
        body = {"transaction": os.urandom(6).hex(), **body}
        self.http.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        return json.loads(self.http.getresponse().read())

    def _events(self, session: int) -> list[dict]:
        self.http.request("GET", f"/janus/{session}?maxev=500")
        answer = json.loads(self.http.getresponse().read())
        return answer if isinstance(answer, list) else [answer]

    def join(self, ports: list[int]) -> list[int]:
        session = self._post("/janus", {"janus": "create"})["data"]["id"]
        self.session = session
        handles = [self._post(f"/janus/{session}", {"janus": "attach", "plugin": "janus.plugin.audiobridge"})
                   ["data"]["id"] for _ in ports]
        created = self._post(f"/janus/{session}/{handles[0]}", {"janus": "message", "body": {
            "request": "create", "room": 1234, "sampling_rate": self.rate, "allow_rtp_participants": True,
            "audiolevel_event": False, "record": False}})
        data = created["plugindata"]["data"]
        if data.get("audiobridge") != "created":
            raise RuntimeError(f"janus create: {data}")
        remote: dict[int, int] = {}
        for start in range(0, len(ports), 25):
            batch = range(start, min(start + 25, len(ports)))
            for i in batch:
                answer = self._post(f"/janus/{session}/{handles[i]}", {"janus": "message", "body": {
                    "request": "join", "room": 1234, "display": f"leg{i}", "codec": "pcmu",
                    "rtp": {"ip": HOST, "port": ports[i], "payload_type": 0}}})
                if answer.get("janus") != "ack":
                    raise RuntimeError(f"janus join: {answer}")
            index = {handles[i]: i for i in batch}
            deadline = time.monotonic() + 30
            while any(i not in remote for i in batch):
                if time.monotonic() > deadline:
                    raise RuntimeError("janus: no joined event")
                for event in self._events(session):
                    data = event.get("plugindata", {}).get("data", {})
                    if data.get("audiobridge") == "joined" and "rtp" in data and event.get("sender") in index:
                        remote[index[event["sender"]]] = int(data["rtp"]["port"])
        return [remote[i] for i in range(len(ports))]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# ------------------------------------------------------------------------ one run
def _boost(pid: int, niceness: int) -> None:
    """Renice a process and all its threads (on Linux each thread has its own niceness)."""
    if not niceness:
        return
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, int(task.name), -niceness)


def measure(server_factory, count: int, seconds: float, warmup: float = 3.0, niceness: int = 0) -> dict:
    load = LoadGen(count)
    server = server_factory(count)
    try:
        remote = server.join(load.ports)
        load.start(remote)
        time.sleep(warmup / 2)  # every thread is up (Janus starts one per participant on join)
        for pid in (server.pid, load.proc.pid):
            _boost(pid, niceness)
        time.sleep(warmup / 2)
        snaps = [load.counts()]
        stats0 = server.stats() if hasattr(server, "stats") else None
        sys0, cpu0, lcpu0, t0 = proc_cpu(server.pid, slice(12, 13)), proc_cpu(server.pid), load.cpu(), time.monotonic()
        while time.monotonic() - t0 < seconds:
            time.sleep(1.0)
            snaps.append(load.counts())
        sys1, cpu1, lcpu1, t1 = proc_cpu(server.pid, slice(12, 13)), proc_cpu(server.pid), load.cpu(), time.monotonic()
        if stats0 is not None and os.environ.get("BENCH_SIP_DEBUG"):
            stats1 = server.stats()
            print("    node:", {k: (v - stats0[k]) / (t1 - t0) if isinstance(v, int | float) else v
                                for k, v in stats1.items()})
    finally:
        load.stop()
        server.stop()
    wall = t1 - t0
    per_leg = (snaps[-1] - snaps[0]) / wall
    windows = np.diff(np.array(snaps), axis=0)  # packets per leg per ~1 s window
    core = (cpu1 - cpu0) / wall
    return {"count": count, "core": core, "sys": (sys1 - sys0) / wall, "per_leg": core / count,
            "pps_min": float(per_leg.min()),
            "pps_median": float(np.median(per_leg)), "window_min": float(windows.min()) if len(windows) else 0.0,
            "load_core": (lcpu1 - lcpu0) / wall,
            "realtime": bool(per_leg.min() >= 50 * 0.97 and (len(windows) == 0 or windows.min() >= 45))}


def line(name: str, r: dict) -> str:
    return (f"  {name:9s} {r['count']:4d} legs: {r['core']:.3f} cores ({r['sys']:.3f} kernel), "
            f"{r['per_leg']:.4f} core/leg; rx per leg "
            f"min {r['pps_min']:.1f} / median {r['pps_median']:.1f} pps, worst 1-s window {r['window_min']:.0f}; "
            f"{'real time' if r['realtime'] else 'NOT real time'}; load generator {r['load_core']:.2f} cores")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--legs", default="10,100,300")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--janus-rate", type=int, default=16000, help="AudioBridge room sampling rate")
    parser.add_argument("--no-janus", action="store_true")
    parser.add_argument("--rounds", type=int, default=3,
                        help="measurements of each server per N, alternating; the ratio is of the medians "
                             "(a 10-leg room is ~0.02 core: one run's noise is tens of percent)")
    parser.add_argument("--priority", type=int, default=0, metavar="N",
                        help="renice both servers and the load generator to -N (root): on a machine "
                             "busy with other work, so both get the CPU they ask for")
    args = parser.parse_args(argv)
    counts = [int(x) for x in args.legs.split(",")]
    print(f"G.711 (PCMU) legs in one mix-minus room, 50 pps each, {args.seconds:.0f} s after a 3 s warm-up; "
          f"Janus AudioBridge room at {args.janus_rate} Hz; niceness -{args.priority}; load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    ours_at: dict[int, dict] = {}
    for count in counts:
        ours_runs, ref_runs = [], []
        for _round in range(args.rounds):  # alternating, so both see the machine's same moods
            ours_runs.append(measure(NodeServer, count, args.seconds, niceness=args.priority))
            print(line("mediagate", ours_runs[-1]), flush=True)
            if not args.no_janus:
                ref_runs.append(measure(lambda n: JanusServer(n, args.janus_rate), count, args.seconds,
                                        niceness=args.priority))
                print(line("janus", ref_runs[-1]), flush=True)
        ours = {**ours_runs[0], "per_leg": float(np.median([r["per_leg"] for r in ours_runs])),
                "pps_min": min(r["pps_min"] for r in ours_runs), "realtime": all(r["realtime"] for r in ours_runs)}
        ours_at[count] = ours
        if ref_runs:
            ref_per_leg = float(np.median([r["per_leg"] for r in ref_runs]))
            ratio = ours["per_leg"] / max(ref_per_leg, 1e-9)
            verdict = ("met" if ratio <= TARGET_RATIO else "missed") if ours["realtime"] else \
                "missed: mediagate not in real time, so it did less work than asked"
            each = ", ".join(f"{a['per_leg'] / max(b['per_leg'], 1e-9):.2f}"
                             for a, b in zip(ours_runs, ref_runs, strict=True))
            rounds = (f"medians of {args.rounds} rounds, {ours['per_leg']:.4f} / {ref_per_leg:.4f} core per leg; "
                      f"per round {each}; " if args.rounds > 1 else "")
            print(f"  ratio mediagate/janus CPU per leg at {count}: {ratio:.2f} ({rounds}target <= {TARGET_RATIO}: "
                  f"{verdict})", flush=True)
    big = [c for c in counts if c >= REALTIME_LEGS]
    if big:
        ok = all(ours_at[c]["realtime"] for c in big)
        detail = ", ".join(f"{c} legs: min {ours_at[c]['pps_min']:.1f} pps" for c in big)
        print(f"  real-time check, >= {REALTIME_LEGS} legs on {os.cpu_count()} cores, every leg >= 48.5 pps: "
              f"{'met' if ok else 'missed'} ({detail})")
    print(f"  load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
