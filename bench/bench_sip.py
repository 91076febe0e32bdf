"""SIP edge benchmarks: call setup rate (sipp) and CPU per G.711 leg in a mix-minus room.

Run from the repo root:

- ``python -m bench.bench_sip setup [--rate 500] [--calls 2500]``: sipp's built-in uac
  (INVITE with SDP -> 200 -> ACK -> BYE) against the node, where every call gets an RTP port
  pair, a media leg and a room join; then the same sipp load against sipp's own C uas as the
  reference. Prints successful/failed calls, the achieved rate and the node's CPU per call,
  and the ratio of our achieved rate to the reference's.
- ``python -m bench.bench_sip legs [--legs 10,100,300] [--seconds 10]``: N PCMU legs set up
  with real INVITEs, each sending 50 packets/s of a tone from its own RTP socket (this
  process is the load generator); all in one room, so each hears a mix-minus of the others.
  Measures the node's CPU (from /proc) per leg and checks that every leg receives its mix at
  50 packets/s ("real time" = >= 97% of the packets due).

The node runs in a child process so its CPU is counted apart from the load generator's.
Janus AudioBridge was not measured here (see the issue's figure of 0.002-0.003 core per
participant for the comparison).
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import multiprocessing as mp
import os
import re
import select
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

CLK = os.sysconf("SC_CLK_TCK")


def _node_main(conn: object, data_dir: str, max_calls: int) -> None:
    from gateway.config import load_config
    from gateway.node import Node
    from gateway.rooms.models import RoomCreate

    async def run() -> None:
        cfg = load_config(None, overrides=[f'node.data_dir="{data_dir}"', "http.port=0", 'log.level="error"',
                                           "auth.bootstrap_key=false", "plugins.sip.port=0",
                                           "plugins.sip.rtp_port_min=0", "plugins.sip.rtp_port_max=0",
                                           "plugins.sip.rtp_timeout_s=0", f"plugins.sip.max_calls={max_calls}",
                                           "rooms.max_participants=0"], environ={})
        node = Node(cfg)
        await node.start()
        await node.rooms.create(RoomCreate(room_id="bench"))
        service = node.pm.get_plugin("sip").service
        conn.send(service.endpoint.port)  # type: ignore[attr-defined]
        while True:
            await asyncio.sleep(0.5)
            if conn.poll():  # type: ignore[attr-defined]
                message = conn.recv()  # type: ignore[attr-defined]
                if message == "stats":
                    room = node.rooms.rooms.get("bench")
                    conn.send({"calls": len(service.calls), "ended": len(service.ended),
                               "participants": len(room.participants) if room else 0,
                               "legs": len(service.engine.legs), "busy": service.rejected_busy,
                               "loop_cpu": time.thread_time(),
                               "ticks": service.engine.ticks, "skipped": service.engine.skipped})  # type: ignore[attr-defined]
                else:
                    break
        await node.stop()

    asyncio.run(run())


class NodeProcess:
    def __init__(self, max_calls: int = 5000) -> None:
        self.dir = tempfile.mkdtemp(prefix="bench-sip-")
        ctx = mp.get_context("spawn")
        self.conn, child = ctx.Pipe()
        # by its module name: under `python -m bench bench_sip` (runpy) this file is __main__,
        # whose functions a spawned child cannot find
        target = importlib.import_module("bench.bench_sip")._node_main
        self.proc = ctx.Process(target=target, args=(child, self.dir, max_calls), daemon=True)
        self.proc.start()
        self.port = self.conn.recv()

    def cpu(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK

    def stats(self) -> dict:
        self.conn.send("stats")
        return self.conn.recv()

    def stop(self) -> None:
        self.conn.send("stop")
        self.proc.join(15)
        if self.proc.is_alive():
            self.proc.kill()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# sipp's built-in uac, except that each 200 must answer its own request (response_txn): the
# built-in one takes a late retransmitted INVITE 200 for the BYE's 200 and counts a call done
# that the node has not ended yet.
UAC = """<?xml version="1.0" encoding="ISO-8859-1" ?>
<scenario name="bench uac">
  <send retrans="500" start_txn="invite"><![CDATA[
INVITE sip:[service]@[remote_ip]:[remote_port] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>
Call-ID: [call_id]
CSeq: 1 INVITE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Type: application/sdp
Content-Length: [len]

v=0
o=user1 53655765 2353687637 IN IP[local_ip_type] [local_ip]
s=-
c=IN IP[media_ip_type] [media_ip]
t=0 0
m=audio [media_port] RTP/AVP 0
a=rtpmap:0 PCMU/8000
]]></send>
  <recv response="100" optional="true" response_txn="invite"/>
  <recv response="180" optional="true" response_txn="invite"/>
  <recv response="200" rrs="true" response_txn="invite"/>
  <send ack_txn="invite"><![CDATA[
ACK [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 1 ACK
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0

]]></send>
  <send retrans="500" start_txn="bye"><![CDATA[
BYE [next_url] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
From: sipp <sip:sipp@[local_ip]:[local_port]>;tag=[pid]SIPpTag00[call_number]
To: <sip:[service]@[remote_ip]:[remote_port]>[peer_tag_param]
Call-ID: [call_id]
CSeq: 2 BYE
Contact: sip:sipp@[local_ip]:[local_port]
Max-Forwards: 70
Content-Length: 0

]]></send>
  <recv response="200" response_txn="bye"/>
</scenario>
"""
TARGET_RATE = 500


def sipp_run(target: str, rate: int, calls: int, extra: list[str] | None = None) -> dict:
    folder = tempfile.mkdtemp(prefix="bench-sipp-")
    scenario = Path(folder, "uac.xml")
    scenario.write_text(UAC)
    # -t u1: one UDP socket; -l: enough concurrent calls never to throttle the rate; -buff_size:
    # sipp's own socket buffers, so sipp is not what drops; the rate is paced per 1000 ms
    argv = ["sipp", "-sf", str(scenario), target, "-s", "bench", "-i", "127.0.0.1", "-p", str(free_port()),
            "-t", "u1", "-r", str(rate), "-rp", "1000", "-m", str(calls), "-l", str(max(100, rate * 4)),
            "-buff_size", str(8 << 20), "-nostdin", "-timeout", "120s", "-trace_stat", "-fd", "1", *(extra or [])]
    started = time.monotonic()
    subprocess.run(argv, cwd=folder, capture_output=True, timeout=180)
    wall = time.monotonic() - started
    stat = next(Path(folder).glob("*.csv"), None)
    ok = failed = retrans = 0
    if stat is not None:
        lines = stat.read_text().splitlines()
        head, last = lines[0].split(";"), lines[-1].split(";")
        ok = int(last[head.index("SuccessfulCall(C)")])
        failed = int(last[head.index("FailedCall(C)")])
        retrans = int(last[head.index("Retransmissions(C)")]) if "Retransmissions(C)" in head else 0
    return {"ok": ok, "failed": failed, "retrans": retrans, "wall": wall, "rate": ok / wall if wall else 0.0}


def bench_setup(rate: int, calls: int) -> None:
    node = NodeProcess()
    try:
        cpu0 = node.cpu()
        ours = sipp_run(f"127.0.0.1:{node.port}", rate, calls)
        cpu = node.cpu() - cpu0
        stats = node.stats()
        for _ in range(20):  # every call the node took must also have ended there
            if not stats["calls"]:
                break
            time.sleep(0.5)
            stats = node.stats()
    finally:
        node.stop()
    uas_port = free_port()
    uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-t", "u1",
                            "-buff_size", str(8 << 20), "-nostdin"],
                           cwd=tempfile.mkdtemp(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        ref = sipp_run(f"127.0.0.1:{uas_port}", rate, calls)
    finally:
        uas.kill()
        uas.wait()
    met = ours["failed"] == 0 and ours["ok"] == calls and ours["rate"] >= TARGET_RATE * 0.95
    print(f"call setup, sipp uac at {rate}/s x {calls} calls (INVITE+SDP -> 200+SDP, RTP port, room join "
          f"-> ACK -> BYE); load average {os.getloadavg()[0]:.2f}")
    print(f"  mediagate: {ours['ok']} ok, {ours['failed']} failed, {ours['retrans']} sipp retransmissions, "
          f"{ours['rate']:.0f} calls/s achieved, node CPU {1000 * cpu / max(1, ours['ok']):.2f} ms per call; "
          f"node: {stats['busy']} answered 503, {stats['calls']} calls still up after the run")
    print(f"  sipp uas (reference, C): {ref['ok']} ok, {ref['failed']} failed, {ref['rate']:.0f} calls/s achieved")
    print(f"  ratio mediagate/reference: {ours['rate'] / max(1e-9, ref['rate']):.2f}")
    print(f"  target: >= {TARGET_RATE} calls/s with 0 failures -> {'MET' if met else 'NOT MET'} at {rate}/s "
          f"(the rate achieved counts sipp's start-up and its last call's end)")


# ------------------------------------------------------------------------------------ legs
INVITE = ("INVITE sip:bench@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKb{i}\r\n"
          "From: <sip:leg{i}@127.0.0.1>;tag=l{i}\r\nTo: <sip:bench@127.0.0.1>\r\nCall-ID: leg{i}@bench\r\n"
          "CSeq: 1 INVITE\r\nContact: <sip:leg{i}@127.0.0.1:{me}>\r\nContent-Type: application/sdp\r\n"
          "Content-Length: {length}\r\n\r\n{sdp}")
SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {rtp} RTP/AVP 0\r\n"


def setup_legs(port: int, count: int) -> tuple[socket.socket, list[socket.socket], list[int]]:
    sip = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sip.bind(("127.0.0.1", 0))
    sip.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    me = sip.getsockname()[1]
    legs, remote = [], [0] * count
    for i in range(count):
        rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        rtp.bind(("127.0.0.1", 0))
        rtp.setblocking(False)
        legs.append(rtp)
        sdp = SDP.format(rtp=rtp.getsockname()[1])
        sip.sendto(INVITE.format(port=port, me=me, i=i, length=len(sdp), sdp=sdp).encode(), ("127.0.0.1", port))
        if i % 20 == 19:
            time.sleep(0.02)
    sip.settimeout(10)
    done = 0
    while done < count:
        data = sip.recv(65535).decode(errors="replace")
        if not data.startswith("SIP/2.0 200") or "INVITE" not in data.split("CSeq:")[1].split("\r\n")[0]:
            continue
        i = int(re.search(r"Call-ID: leg(\d+)@", data).group(1))
        if remote[i]:
            continue
        remote[i] = int(re.search(r"m=audio (\d+)", data).group(1))
        tag = re.search(r"To: [^\r\n]*tag=([^;\r\n]+)", data).group(1)
        ack = (f"ACK sip:bench@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKa{i}\r\n"
               f"From: <sip:leg{i}@127.0.0.1>;tag=l{i}\r\nTo: <sip:bench@127.0.0.1>;tag={tag}\r\n"
               f"Call-ID: leg{i}@bench\r\nCSeq: 1 ACK\r\nContent-Length: 0\r\n\r\n")
        sip.sendto(ack.encode(), ("127.0.0.1", port))
        done += 1
    return sip, legs, remote


class RtpLoad(threading.Thread):
    """50 packets/s of PCMU per leg, and a count of what each leg receives."""

    def __init__(self, legs: list[socket.socket], remote: list[int]) -> None:
        super().__init__(daemon=True)
        self.legs, self.remote = legs, remote
        self.received = np.zeros(len(legs), dtype=np.int64)
        self.stop = threading.Event()
        from plugins.sip import g711
        t = np.arange(160) / 8000
        self.payloads = [g711.encode((np.sin(2 * np.pi * (300 + 7 * i) * t) * 3000).astype(np.int16), "PCMU").tobytes()
                         for i in range(len(legs))]

    def run(self) -> None:
        seq, deadline = 0, time.monotonic()
        fd_index = {s.fileno(): i for i, s in enumerate(self.legs)}
        poller = select.epoll()
        for s in self.legs:
            poller.register(s.fileno(), select.EPOLLIN)
        while not self.stop.is_set():
            header = bytes([0x80, 0]) + (seq & 0xFFFF).to_bytes(2, "big") + (seq * 160 & 0xFFFFFFFF).to_bytes(4, "big")
            for i, sock in enumerate(self.legs):
                sock.sendto(header + i.to_bytes(4, "big") + self.payloads[i], ("127.0.0.1", self.remote[i]))
            seq += 1
            deadline += 0.02
            while True:
                wait = deadline - time.monotonic()
                for fd, _ in poller.poll(max(0.0, wait)):
                    sock = self.legs[fd_index[fd]]
                    while True:
                        try:
                            sock.recv(2048)
                        except BlockingIOError:
                            break
                        self.received[fd_index[fd]] += 1
                if wait <= 0:
                    break


def bench_legs(counts: list[int], seconds: float) -> None:
    print(f"G.711 legs in one mix-minus room, 50 pps each, measured over {seconds:.0f} s after 3 s warm-up")
    for count in counts:
        node = NodeProcess(max_calls=count + 10)
        try:
            _sip, legs, remote = setup_legs(node.port, count)
            load = RtpLoad(legs, remote)
            load.start()
            time.sleep(3)
            cpu0, got0, t0 = node.cpu(), load.received.copy(), time.monotonic()
            time.sleep(seconds)
            cpu1, got1, t1 = node.cpu(), load.received.copy(), time.monotonic()
            load.stop.set()
            load.join(2)
            wall = t1 - t0
            per_leg_pps = (got1 - got0) / wall
            realtime = float((per_leg_pps >= 50 * 0.97).mean())
            core = (cpu1 - cpu0) / wall
            print(f"  {count:4d} legs: node {core:.3f} cores, {core / count:.4f} core per leg; received "
                  f"min {per_leg_pps.min():.1f} / median {np.median(per_leg_pps):.1f} pps per leg; "
                  f"{100 * realtime:.0f}% of legs in real time")
        finally:
            node.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what")  # none (python -m bench bench_sip): the set-up rate
    setup = sub.add_parser("setup")
    setup.add_argument("--rate", type=int, default=500)
    setup.add_argument("--calls", type=int, default=2500)
    legs = sub.add_parser("legs")
    legs.add_argument("--legs", default="10,100,300")
    legs.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    if args.what is None:
        args = parser.parse_args(["setup"])
    if args.what == "setup":
        bench_setup(args.rate, args.calls)
    else:
        bench_legs([int(x) for x in args.legs.split(",")], args.seconds)


if __name__ == "__main__":
    main()
