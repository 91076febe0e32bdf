"""Call legs' media: one worker thread moves the RTP of every leg once per 20 ms tick.

Per tick it drains every leg's socket (non-blocking), decodes (G.711 with numpy tables,
G.722/Opus with PyAV), pushes the audio onto the leg's track; then takes every leg's
mix-minus block from the room mixer, downsamples all G.711 legs in one numpy pass, encodes
and sends one 20 ms packet each. Nothing of this rides the event loop: the loop only gets
the rare events (a DTMF digit, an RTP timeout) through ``call_soon_threadsafe``.

Symmetric RTP (RFC 4961): a leg sends to where its peer's packets come from once one
arrived (NAT latching), to the SDP address before that.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import select
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from queue import Empty
from typing import Any

import av
import numpy as np
import structlog

from plugins.sip import dtmf, g711, rtp
from plugins.sip.codecs import (
    DOWN_HISTORY,
    DOWN_HISTORY_STEREO,
    UP_HISTORY,
    PyAvCodec,
    downsample_batch,
    downsample_stereo_8k,
    to_mono,
    upsample_8k_stereo,
)
from plugins.sip.sdp import Codec

log = structlog.get_logger(__name__)

TICK = 0.02
MAX_LAG = 0.2
MAX_BLOCKS_PER_TICK = 3  # catch-up bound after a late tick: older blocks are skipped, not sent
# in a burst (a peer's jitter buffer would drop a burst anyway, and skipping sheds the work
# that made the tick late)
MAX_PACKETS_PER_TICK = 6  # received packets a leg decodes per tick; older ones are stale


@dataclass(eq=False)
class MediaLeg:
    """The RTP side of one call: sockets, codec state, the track it feeds and the mix it hears."""

    rtp_sock: socket.socket
    rtcp_sock: socket.socket
    codec: Codec
    telephone_event: int | None
    remote: tuple[str, int] | None
    on_digit: Callable[[str], None] | None = None
    on_timeout: Callable[[], None] | None = None
    track: Any = None  # gateway Track, set when joined
    mix: Any = None  # MixOutput (mix-minus), set when joined
    gain: float = 1.0
    sending: bool = True  # False on hold (the peer sendonly/inactive)
    receiving: bool = True
    rtp_timeout: float = 30.0
    ssrc: int = field(default_factory=lambda: secrets.randbits(32))
    seq: int = field(default_factory=lambda: secrets.randbits(16))
    ts: int = field(default_factory=lambda: secrets.randbits(32))
    latched: bool = False
    last_rx: float = field(default_factory=time.monotonic)
    packets_in: int = 0
    packets_out: int = 0
    bytes_in: int = 0
    lost: int = 0
    skipped: int = 0  # mix blocks not sent / packets not decoded because the engine was late
    history: np.ndarray = field(default_factory=lambda: np.zeros((1, DOWN_HISTORY), dtype=np.float32))
    history_stereo: np.ndarray = field(default_factory=lambda: np.zeros((1, DOWN_HISTORY_STEREO), dtype=np.float32))
    up_history: np.ndarray = field(default_factory=lambda: np.zeros((1, UP_HISTORY), dtype=np.float32))
    pyav: PyAvCodec | None = None
    dtmf_out: deque[tuple[bytes, bool] | None] = field(default_factory=deque)
    _dtmf_ts: int | None = None
    _last_event_ts: int | None = None
    _event_ended: bool = False
    _last_seq: int | None = None
    _pts: int = 0
    _timed_out: bool = False
    closed: bool = False

    def __post_init__(self) -> None:
        if self.codec.name not in ("PCMU", "PCMA"):
            self.pyav = PyAvCodec(self.codec)

    @property
    def local_port(self) -> int:
        return self.rtp_sock.getsockname()[1]

    def queue_digits(self, digits: str, duration_ms: int = 100, gap_ms: int = 70) -> None:
        """RFC 4733 events, one after another, sent by the worker instead of audio."""
        for digit in digits:
            self.dtmf_out.extend(dtmf.event_payloads(digit, duration_ms))
            self.dtmf_out.extend([None] * max(1, gap_ms // 20))

    def close(self) -> None:
        self.closed = True
        for sock in (self.rtp_sock, self.rtcp_sock):
            sock.close()


class LegEngine:
    """The one thread that runs every leg's media.

    It ticks right after the room mixer (it waits on the newest leg's mix output, with a 20 ms
    timer as the fallback): running while the mixer sleeps means the two threads don't hand
    the GIL to each other at every socket call. Receiving asks one epoll set which of the
    legs' sockets have data, so idle sockets cost no system call."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._legs: tuple[MediaLeg, ...] = ()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._poll = select.epoll()
        self._fds: dict[int, tuple[MediaLeg, bool]] = {}  # fd -> (leg, is RTCP); swapped whole
        self.ticks = 0
        self.tick_seconds = 0.0  # CPU of the ticks, for the benchmark
        self.skipped = 0

    @property
    def legs(self) -> tuple[MediaLeg, ...]:
        return self._legs

    def add(self, leg: MediaLeg) -> None:
        with self._lock:
            self._legs = (*self._legs, leg)
            fds = dict(self._fds)
            for sock, rtcp in ((leg.rtp_sock, False), (leg.rtcp_sock, True)):
                self._poll.register(sock.fileno(), select.EPOLLIN)
                fds[sock.fileno()] = (leg, rtcp)
            self._fds = fds
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="sip-media", daemon=True)
            self._thread.start()

    def remove(self, leg: MediaLeg) -> None:
        with self._lock:
            self._legs = tuple(x for x in self._legs if x is not leg)
            fds = dict(self._fds)
            for sock in (leg.rtp_sock, leg.rtcp_sock):
                if fds.get(sock.fileno(), (None,))[0] is leg:
                    del fds[sock.fileno()]
                    with contextlib.suppress(OSError, ValueError):
                        self._poll.unregister(sock.fileno())
            self._fds = fds
        leg.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        for leg in self._legs:
            leg.close()
        self._legs = ()
        self._fds = {}
        self._poll.close()

    # ---------------------------------------------------------------- the worker
    def _clock(self) -> Any:
        """The mix output of the newest leg: the mixer fills it last of a room's legs."""
        for leg in reversed(self._legs):
            wait = getattr(leg.mix, "wait_ready", None)
            if wait is not None and not leg.closed:
                return wait
        return None

    def _run(self) -> None:
        deadline = time.monotonic()
        while not self._stop.is_set():
            wait = self._clock()
            now = time.monotonic()
            if wait is not None:
                wait(2 * TICK)
                deadline = time.monotonic()
            else:
                late = now - deadline
                if late < 0:
                    if self._stop.wait(-late):
                        return
                elif late > MAX_LAG:
                    skip = int(late / TICK)
                    self.skipped += skip
                    deadline += skip * TICK
            if self._stop.is_set():
                return
            started = time.thread_time()
            try:
                self.tick()
            except Exception:
                log.exception("sip media tick failed")
            self.tick_seconds += time.thread_time() - started
            self.ticks += 1
            deadline += TICK

    def tick(self) -> None:
        legs = self._legs
        self._send(legs)  # first: the mix was just made
        now = time.monotonic()
        self._g711_in: list[tuple[MediaLeg, bytes]] = []
        self._receive_all(now)
        if self._g711_in:
            self._decode_g711(self._g711_in)
        for leg in legs:  # RTP timeout
            if (now - leg.last_rx > leg.rtp_timeout and leg.rtp_timeout and leg.receiving
                    and not leg._timed_out and not leg.closed and leg.on_timeout is not None):
                leg._timed_out = True
                self.loop.call_soon_threadsafe(leg.on_timeout)

    # ---------------------------------------------------------------- receiving
    def _receive_all(self, now: float) -> None:
        """Read the sockets epoll says are ready, one datagram per socket per round (level
        triggered: a socket with more queued is ready again in the next round)."""
        got: dict[MediaLeg, list[tuple[int, bytes]]] = {}
        fds = self._fds
        for _round in range(16):
            events = self._poll.poll(0)
            if not events:
                break
            for fd, _mask in events:
                entry = fds.get(fd)
                if entry is None:
                    continue
                leg, rtcp = entry
                try:
                    if rtcp:
                        leg.rtcp_sock.recv(2048)
                        continue
                    data, addr = leg.rtp_sock.recvfrom(2048)
                except OSError:
                    continue
                if len(data) < 12 or data[0] & 0xC0 != 0x80:
                    continue
                pt = data[1] & 0x7F
                if pt == leg.codec.payload_type:
                    if data[0] == 0x80:  # no CSRC, extension or padding: the payload is data[12:]
                        item = ((data[2] << 8) | data[3], data[12:])
                    else:
                        try:
                            item = (((data[2] << 8) | data[3]), rtp.parse(data).payload)
                        except rtp.RtpError:
                            continue
                    packets = got.get(leg)
                    if packets is None:
                        got[leg] = [item]
                    else:
                        packets.append(item)
                elif pt == leg.telephone_event:
                    try:
                        self._event(leg, rtp.parse(data))
                    except rtp.RtpError:
                        continue
                else:
                    continue
                leg.last_rx = now
                if addr != leg.remote:  # symmetric RTP: follow the peer's real source (NAT)
                    leg.remote = addr
                    leg.latched = True
        for leg, packets in got.items():
            if leg.closed:
                continue
            leg.packets_in += len(packets)
            if len(packets) > 1:
                last = leg._last_seq
                packets.sort(key=lambda p: p[0] if last is None else (p[0] - last) & 0xFFFF)
                if len(packets) > MAX_PACKETS_PER_TICK:  # a late tick: decode the newest only
                    leg.skipped += len(packets) - MAX_PACKETS_PER_TICK
                    packets = packets[-MAX_PACKETS_PER_TICK:]
            for sequence, payload in packets:
                if leg._last_seq is not None:
                    delta = (sequence - leg._last_seq) & 0xFFFF
                    if delta == 0 or delta > 0x8000:
                        continue  # duplicate or too late
                    leg.lost += delta - 1
                leg._last_seq = sequence
                leg.bytes_in += len(payload)
                self._decode(leg, payload)

    def _decode(self, leg: MediaLeg, payload: bytes) -> None:
        track = leg.track  # read once: the loop may detach it meanwhile
        if track is None or not payload:
            return
        if leg.pyav is None:
            self._g711_in.append((leg, payload))  # decoded with every other leg's, below
            return
        for frame in leg.pyav.decode(payload):
            if leg.gain != 1.0:
                arr = frame.to_ndarray()
                arr = np.clip(arr * leg.gain, -32767, 32767).astype(arr.dtype)
                frame2 = av.AudioFrame.from_ndarray(arr, format=frame.format.name, layout=frame.layout.name)
                frame2.sample_rate = frame.sample_rate
                frame = frame2
            frame.pts = None
            track.push_frame(frame)

    def _decode_g711(self, received: list[tuple[MediaLeg, bytes]]) -> None:
        """This tick's G.711 payloads: the 20 ms ones of all legs as one batch (table lookup,
        gain, 6x polyphase upsampling, stereo), odd sizes one by one; then onto the tracks."""
        batch = [(leg, p) for leg, p in received if len(p) == 160]
        odd = [(leg, p) for leg, p in received if len(p) != 160 and len(p) % 2 == 0]
        for group in ([batch] if batch else []) + [[item] for item in odd]:
            codes = np.frombuffer(b"".join(p for _, p in group), dtype=np.uint8).reshape(len(group), -1)
            laws = {leg.codec.name for leg, _ in group}
            if len(laws) == 1:
                pcm = g711.decode(codes, laws.pop())
            else:
                pcm = np.stack([g711.decode(c, leg.codec.name) for c, (leg, _) in zip(codes, group, strict=True)])
            gains = np.array([leg.gain for leg, _ in group], dtype=np.float32)
            if (gains != 1.0).any():
                pcm = np.clip(pcm * gains[:, None], -32767, 32767).astype(np.int16)
            history = np.concatenate([leg.up_history for leg, _ in group])
            stereo = upsample_8k_stereo(pcm, history)
            for i, (leg, _) in enumerate(group):
                leg.up_history = history[i:i + 1]
                track = leg.track
                if track is not None:
                    track.push_samples(stereo[i])

    def _event(self, leg: MediaLeg, packet: rtp.RtpPacket) -> None:
        """One digit per event (RFC 4733 §2.5): a new timestamp, or a restart after an end."""
        parsed = dtmf.event_digit(packet.payload)
        if parsed is None or leg.on_digit is None:
            return
        digit, end, _duration = parsed
        if packet.timestamp != leg._last_event_ts or (leg._event_ended and not end):
            leg._last_event_ts = packet.timestamp
            leg._event_ended = False
            self.loop.call_soon_threadsafe(leg.on_digit, digit)
        if end:
            leg._event_ended = True  # the thrice-sent end packets add nothing

    # ---------------------------------------------------------------- sending
    def _send(self, legs: tuple[MediaLeg, ...]) -> None:
        """Send the mix blocks the mixer has queued for each leg: one per 20 ms on time, up to
        MAX_BLOCKS_PER_TICK after a late tick (so the legs follow the room's clock); beyond
        that the oldest are skipped, with the RTP timestamp moved on (the peer sees a loss)."""
        pending = [leg for leg in legs if not leg.closed and leg.mix is not None]
        for leg in pending:
            mix = leg.mix
            excess = getattr(mix, "queued", 0) - MAX_BLOCKS_PER_TICK
            for _ in range(excess):
                try:
                    mix.get_nowait()
                except Empty:
                    break
                leg.ts += leg.codec.samples_per_packet
                leg.skipped += 1
        for _round in range(MAX_BLOCKS_PER_TICK):
            if not pending:
                return
            g711_legs: list[MediaLeg] = []
            g711_blocks: list[np.ndarray] = []
            more = []
            for leg in pending:
                mix = leg.mix
                if mix is None or getattr(mix, "queued", 1) == 0:  # skip get_nowait's Empty path
                    continue
                try:
                    _pts, block = mix.get_nowait()
                except Empty:
                    continue
                more.append(leg)
                if leg.remote is None or not leg.sending:
                    leg.ts += leg.codec.samples_per_packet
                elif leg.dtmf_out:
                    self._send_event(leg)
                elif leg.pyav is None:
                    g711_legs.append(leg)
                    g711_blocks.append(block)
                else:
                    self._send_pyav(leg, block)
            if g711_legs:
                history = np.concatenate([leg.history_stereo for leg in g711_legs])
                low = downsample_stereo_8k(g711_blocks, history)
                encoded = {"PCMU": g711.encode(low, "PCMU")} if any(x.codec.name == "PCMU" for x in g711_legs) else {}
                if any(x.codec.name == "PCMA" for x in g711_legs):
                    encoded["PCMA"] = g711.encode(low, "PCMA")
                payloads = {law: codes.tobytes() for law, codes in encoded.items()}
                size = low.shape[1]
                pack = rtp.HEADER.pack
                for i, leg in enumerate(g711_legs):  # _emit inlined: this runs per leg per tick
                    leg.history_stereo = history[i:i + 1]
                    codec = leg.codec
                    seq, ts = leg.seq, leg.ts
                    packet = pack(0x80, codec.payload_type, seq, ts & 0xFFFFFFFF, leg.ssrc) + \
                        payloads[codec.name][i * size:(i + 1) * size]
                    leg.seq = (seq + 1) & 0xFFFF
                    leg.ts = ts + codec.samples_per_packet
                    try:
                        leg.rtp_sock.sendto(packet, leg.remote)  # type: ignore[arg-type]
                        leg.packets_out += 1
                    except OSError:
                        pass  # a full buffer or an unreachable peer: the next tick tries again
            pending = more

    def _send_pyav(self, leg: MediaLeg, block: np.ndarray) -> None:
        assert leg.pyav is not None
        mono = to_mono(block[None])
        samples = downsample_batch(mono, leg.history, leg.codec.rate)[0]
        for payload in leg.pyav.encode(samples):
            self._emit(leg, payload, leg.codec.payload_type)

    def _send_event(self, leg: MediaLeg) -> None:
        item = leg.dtmf_out.popleft()
        if item is None:  # the gap between digits: back to audio timing
            leg._dtmf_ts = None
            leg.ts += leg.codec.samples_per_packet
            return
        payload, marker = item
        if marker or leg._dtmf_ts is None:
            leg._dtmf_ts = leg.ts
        packet = rtp.build(leg.telephone_event or 101, leg.seq, leg._dtmf_ts, leg.ssrc, payload, marker)
        leg.seq = (leg.seq + 1) & 0xFFFF
        leg.ts += leg.codec.samples_per_packet
        self._sendto(leg, packet)

    def _emit(self, leg: MediaLeg, payload: bytes, pt: int) -> None:
        packet = rtp.build(pt, leg.seq, leg.ts, leg.ssrc, payload)
        leg.seq = (leg.seq + 1) & 0xFFFF
        leg.ts += leg.codec.samples_per_packet
        self._sendto(leg, packet)

    @staticmethod
    def _sendto(leg: MediaLeg, packet: bytes) -> None:
        try:
            leg.rtp_sock.sendto(packet, leg.remote)  # type: ignore[arg-type]
            leg.packets_out += 1
        except OSError:
            pass  # a full buffer or an unreachable peer: the next tick tries again
