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
import multiprocessing as mp
import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

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
                    conn.send({"calls": len(service.calls), "ended": len(service.ended),
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
        self.proc = ctx.Process(target=_node_main, args=(child, self.dir, max_calls), daemon=True)
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


def sipp_run(target: str, rate: int, calls: int, extra: list[str] | None = None) -> dict:
    folder = tempfile.mkdtemp(prefix="bench-sipp-")
    argv = ["sipp", "-sn", "uac", target, "-s", "bench", "-i", "127.0.0.1", "-p", str(free_port()), "-r", str(rate),
            "-m", str(calls), "-l", str(rate * 4), "-nostdin", "-timeout", "120s", "-trace_stat", "-fd", "1",
            *(extra or [])]
    started = time.monotonic()
    subprocess.run(argv, cwd=folder, capture_output=True, timeout=180)
    wall = time.monotonic() - started
    stat = next(Path(folder).glob("*.csv"), None)
    ok = failed = 0
    if stat is not None:
        lines = stat.read_text().splitlines()
        head, last = lines[0].split(";"), lines[-1].split(";")
        ok = int(last[head.index("SuccessfulCall(C)")])
        failed = int(last[head.index("FailedCall(C)")])
    return {"ok": ok, "failed": failed, "wall": wall, "rate": ok / wall if wall else 0.0}


def bench_setup(rate: int, calls: int) -> None:
    node = NodeProcess()
    try:
        cpu0 = node.cpu()
        ours = sipp_run(f"127.0.0.1:{node.port}", rate, calls)
        cpu = node.cpu() - cpu0
    finally:
        node.stop()
    uas_port = free_port()
    uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.1", "-p", str(uas_port), "-nostdin"],
                           cwd=tempfile.mkdtemp(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        ref = sipp_run(f"127.0.0.1:{uas_port}", rate, calls)
    finally:
        uas.kill()
        uas.wait()
    print(f"call setup, sipp uac at {rate}/s x {calls} calls (INVITE+SDP -> 200 -> ACK -> BYE)")
    print(f"  mediagate: {ours['ok']} ok, {ours['failed']} failed, {ours['rate']:.0f} calls/s achieved, "
          f"node CPU {1000 * cpu / max(1, ours['ok']):.2f} ms per call")
    print(f"  sipp uas (reference, C): {ref['ok']} ok, {ref['failed']} failed, {ref['rate']:.0f} calls/s achieved")
    print(f"  ratio mediagate/reference: {ours['rate'] / max(1e-9, ref['rate']):.2f}")


# ------------------------------------------------------------------------------------ legs
def bench_legs(counts: list[int], seconds: float) -> None:
    """The media benchmark lives in bench.bench_sip_media (with the Janus AudioBridge reference)."""
    from bench import bench_sip_media

    bench_sip_media.main(["--legs", ",".join(map(str, counts)), "--seconds", str(seconds)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    setup = sub.add_parser("setup")
    setup.add_argument("--rate", type=int, default=500)
    setup.add_argument("--calls", type=int, default=2500)
    legs = sub.add_parser("legs")
    legs.add_argument("--legs", default="10,100,300")
    legs.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    if args.what == "setup":
        bench_setup(args.rate, args.calls)
    else:
        bench_legs([int(x) for x in args.legs.split(",")], args.seconds)


if __name__ == "__main__":
    main()
