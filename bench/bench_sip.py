"""SIP edge benchmarks: call setup rate (sipp) and CPU per G.711 leg in a mix-minus room.

Run from the repo root:

- ``python -m bench.bench_sip setup [--rate 500] [--calls 2500]``: sipp's built-in uac
  (INVITE with SDP -> 200 -> ACK -> BYE) against the node, where every call gets an RTP port
  pair, a media leg and a room join; then the same sipp load against sipp's own C uas as the
  reference. Prints successful/failed calls, the achieved rate and the node's CPU per call,
  and the ratio of our achieved rate to the reference's.
- ``python -m bench.bench_sip legs [--legs 10,100,300] [--seconds 10]``: CPU per G.711 leg in a
  mix-minus room against Janus AudioBridge, and the 300-leg real-time check; see
  ``bench/bench_sip_media.py``.

The node runs in a child process so its CPU is counted apart from the load generator's.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import multiprocessing as mp
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

CLK = os.sysconf("SC_CLK_TCK")


async def start_sip_node(data_dir: str, max_calls: int) -> tuple[Any, Any]:
    """A node with the SIP edge on free ports and the room 'bench'; returns (node, sip service)."""
    from gateway.config import load_config
    from gateway.node import Node
    from gateway.rooms.models import RoomCreate

    cfg = load_config(None, overrides=[f'node.data_dir="{data_dir}"', "http.port=0", 'log.level="error"',
                                       "auth.bootstrap_key=false", "plugins.sip.port=0",
                                       "plugins.sip.rtp_port_min=0", "plugins.sip.rtp_port_max=0",
                                       "plugins.sip.rtp_timeout_s=0", f"plugins.sip.max_calls={max_calls}",
                                       "rooms.max_participants=0"], environ={})
    node = Node(cfg)
    await node.start()
    await node.rooms.create(RoomCreate(room_id="bench"))
    return node, node.pm.get_plugin("sip").service


def _node_main(conn: object, data_dir: str, max_calls: int) -> None:
    async def run() -> None:
        node, service = await start_sip_node(data_dir, max_calls)
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
def bench_legs(counts: list[int], seconds: float) -> None:
    """The media benchmark lives in bench.bench_sip_media (with the Janus AudioBridge reference)."""
    from bench import bench_sip_media

    bench_sip_media.main(["--legs", ",".join(map(str, counts)), "--seconds", str(seconds)])


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
