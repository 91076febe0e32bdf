"""Call legs' media: the RTP of every leg moves once per 20 ms tick, in the room mixer's thread
right after its mix (a mixer tick hook), or in the engine's own thread while no mixer ticks.

Per tick it takes every leg's mix-minus block from the room mixer and sends it (all G.711
legs downmixed, decimated and encoded in one filter-bank call, then one sendto each), then drains
the sockets epoll reports ready, decodes (G.711: every leg's packet in one filter-bank call,
the decode table fused in; G.722/Opus with PyAV) and pushes the audio onto each leg's track. The
per-sample work of the G.711 legs is one call each way per tick whatever the number of legs
(the filter bank of :func:`~plugins.sip.codecs.new_bank`, in C, keeps their filter memories,
one row per leg); what is left per leg in Python is one recvfrom, one sendto and a few attribute
updates. Nothing of this rides the event loop: the loop only gets the rare events (a DTMF
digit, an RTP timeout) through ``call_soon_threadsafe``.

Capacity: the engine's ``load`` is a tick's wall time over its 20 ms, smoothed over about a
second; past ``SATURATED`` (0.8) the service answers new calls 503 + Retry-After, so the
established legs keep their real time (``python -m bench.bench_sip_media``: 500 legs took
0.35 of it on a quiet 2-core machine, with the filter bank and the mixer's small rooms in C).

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
    PyAvCodec,
    downsample_batch,
    new_bank,
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
TIMEOUT_EVERY = 10  # ticks between RTP-timeout checks (200 ms: a timeout is tens of seconds)
LOAD_SMOOTHING = 0.05  # per tick: the engine's load follows about the last second
HOOK_CHECK = 0.1  # seconds between the watchdog's checks that the mixer still runs the ticks
SATURATED = 0.8  # load (wall time of a tick / 20 ms) beyond which new calls are refused


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
    history: np.ndarray = field(default_factory=lambda: np.zeros((1, DOWN_HISTORY), dtype=np.float32))  # PyAV legs
    slot: int = -1  # G.711 legs: the row of the engine's filter bank (set by the media thread)
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
    """Runs every leg's media, one tick per 20 ms.

    The ticks run in the newest leg's room mixer's thread, right after its mix (a tick hook):
    no second thread to wake through an Event every 20 ms, and the two never hand the GIL to
    each other at every socket call. The engine's own thread is a watchdog that picks that
    mixer; while none ticks (a leg playing a prompt, a closed room) it ticks itself, waiting on
    the newest leg's mix output or on a 20 ms timer. Receiving asks one epoll set which of the
    legs' sockets have data, so idle sockets cost no system call.

    Per leg and tick only what must be per leg runs in Python: one recvfrom, the sequence
    check, one ``push_samples``, one ``get_nowait`` and one sendto. Everything per sample is one
    filter-bank call over all G.711 legs of the tick: the table decode, the filters of the
    bank (whose rows, one per leg, only this thread touches: legs get and give
    back their slot at the start of a tick), the encode."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._legs: tuple[MediaLeg, ...] = ()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._changed = threading.Event()  # a leg came or went: the watchdog re-picks the mixer
        self._tick_lock = threading.Lock()
        self._hooked: tuple[Any, Callable[[], None]] | None = None  # (mix output, unregister)
        self._hook_ticked = 0.0  # monotonic time of the last tick the mixer's hook ran
        self._poll = select.epoll()
        self._fds: dict[int, tuple[MediaLeg, bool]] = {}  # fd -> (leg, is RTCP); swapped whole
        self.bank = new_bank()
        self._joined: deque[MediaLeg] = deque()  # legs waiting for a filter slot
        self._left: deque[MediaLeg] = deque()  # legs whose slot goes back to the bank
        self.ticks = 0
        self.tick_seconds = 0.0  # CPU of the ticks, for the benchmark
        self.skipped = 0
        # wall time of a tick over its 20 ms, smoothed: with the GIL waits in it, this is the
        # headroom the legs' real time has left (1.0: a tick takes the whole period)
        self.load = 0.0

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
        if leg.pyav is None:
            self._joined.append(leg)
        self._changed.set()
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
        self._left.append(leg)  # after leaving _legs: no later tick serves it
        self._changed.set()
        leg.close()

    def stop(self) -> None:
        self._stop.set()
        self._changed.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None
        self._unhook()
        with self._tick_lock:  # a hook tick already running finishes before the sockets close
            pass
        for leg in self._legs:
            leg.close()
        self._legs = ()
        self._fds = {}
        self._poll.close()

    # ---------------------------------------------------------------- the worker
    def _clock(self) -> Any:
        """The mix output of the newest leg: the mixer fills it last of a room's legs."""
        for leg in reversed(self._legs):
            mix = leg.mix
            if getattr(mix, "wait_ready", None) is not None and not leg.closed and not mix.closed:
                return mix
        return None

    def _rehook(self, mix: Any) -> None:
        """Run the ticks from the mixer that fills `mix`, right after its tick, in its thread."""
        self._unhook()
        register = getattr(mix, "after_tick", None)
        remove = register(self._after_mix) if register is not None else None
        if remove is not None:
            self._hooked = (mix, remove)
            self._hook_ticked = time.monotonic()

    def _unhook(self) -> None:
        hooked, self._hooked = self._hooked, None
        if hooked is not None:
            hooked[1]()

    def _after_mix(self) -> None:
        """The mixer's tick hook: this tick's blocks were just queued."""
        if self._stop.is_set():
            return
        self._hook_ticked = time.monotonic()
        self._timed_tick()

    def _run(self) -> None:
        """Normally only a watchdog: the mixer's thread runs the ticks (``_after_mix``). This
        thread picks the mixer (the newest leg's, again when legs come and go) and ticks itself,
        waiting on the newest leg's output or on a 20 ms timer, while no mixer does (a leg
        playing a prompt, a stalled or closed mixer)."""
        deadline = time.monotonic()
        while not self._stop.is_set():
            mix = self._clock()
            hooked = self._hooked
            if hooked is not None and (hooked[0] is not mix or hooked[0].closed):
                self._unhook()
                hooked = None
            if hooked is None and mix is not None:
                self._rehook(mix)
                hooked = self._hooked
            if hooked is not None:
                self._changed.wait(HOOK_CHECK)  # woken early when a leg comes or goes
                self._changed.clear()
                if time.monotonic() - self._hook_ticked < HOOK_CHECK + 2 * TICK or self._stop.is_set():
                    continue
                self._unhook()  # the mixer stopped ticking: tick from here until it resumes
                deadline = time.monotonic()
            now = time.monotonic()
            if mix is not None:
                mix.wait_ready(2 * TICK)
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
            self._timed_tick()
            deadline += TICK

    def _timed_tick(self) -> None:
        with self._tick_lock:  # the hook and this thread's fallback never tick at once
            if self._stop.is_set():
                return
            started, wall = time.thread_time(), time.monotonic()
            try:
                self.tick()
            except Exception:
                log.exception("sip media tick failed")
            self.tick_seconds += time.thread_time() - started
            self.load += ((time.monotonic() - wall) / TICK - self.load) * LOAD_SMOOTHING
            self.ticks += 1

    @property
    def saturated(self) -> bool:
        """The ticks take most of their period: another call would put every leg's real
        time at risk, so the service answers new INVITEs 503 (the established keep theirs)."""
        return self.load > SATURATED

    def _slots(self) -> None:
        """Hand out and take back filter-bank slots (only this thread touches the bank)."""
        while self._joined:
            leg = self._joined.popleft()
            if not leg.closed and leg.slot < 0:
                leg.slot = self.bank.allocate()
        while self._left:
            leg = self._left.popleft()
            if leg.slot >= 0:
                self.bank.release(leg.slot)
                leg.slot = -1

    def tick(self) -> None:
        if self._joined or self._left:
            self._slots()
        legs = self._legs
        self._send(legs)  # first: the mix was just made
        now = time.monotonic()
        self._receive_all(now)
        if self.ticks % TIMEOUT_EVERY == 0:
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
        poll = self._poll.poll
        for _round in range(16):
            events = poll(0)
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
        if got:
            self._accept(got)

    def _accept(self, got: dict[MediaLeg, list[tuple[int, bytes]]]) -> None:
        """Order each leg's packets, drop duplicates and late ones, count losses; decode the
        rest in rounds: round r holds each leg's r-th packet of the tick, so every filter
        sees its leg's packets in order."""
        rounds: list[list[tuple[MediaLeg, bytes]]] = [[]]
        first = rounds[0]
        for leg, packets in got.items():
            if leg.closed or leg.track is None:
                continue
            leg.packets_in += len(packets)
            if len(packets) > 1:
                last = leg._last_seq
                packets.sort(key=lambda p: p[0] if last is None else (p[0] - last) & 0xFFFF)
                if len(packets) > MAX_PACKETS_PER_TICK:  # a late tick: decode the newest only
                    leg.skipped += len(packets) - MAX_PACKETS_PER_TICK
                    packets = packets[-MAX_PACKETS_PER_TICK:]
            r = 0
            for sequence, payload in packets:
                last = leg._last_seq
                if last is not None:
                    delta = (sequence - last) & 0xFFFF
                    if delta == 0 or delta > 0x8000:
                        continue  # duplicate or too late
                    if delta != 1:
                        leg.lost += delta - 1
                leg._last_seq = sequence
                if not payload:
                    continue
                leg.bytes_in += len(payload)
                if leg.pyav is not None:
                    self._decode_pyav(leg, payload)
                    continue
                if r == 0:
                    first.append((leg, payload))
                else:
                    if r == len(rounds):
                        rounds.append([])
                    rounds[r].append((leg, payload))
                r += 1
        for group in rounds:
            if group:
                self._decode_g711(group)

    def _decode_pyav(self, leg: MediaLeg, payload: bytes) -> None:
        assert leg.pyav is not None
        track = leg.track  # read once: the loop may detach it meanwhile
        if track is None:
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
        """One packet per leg: the 20 ms ones of all legs as one batch (table lookup, gain,
        6x polyphase upsampling to stereo in the filter bank), odd sizes one by one; then
        onto the tracks."""
        batch = [(leg, p) for leg, p in received if len(p) == 160 and leg.slot >= 0]
        if len(batch) != len(received):
            for leg, payload in received:
                if len(payload) != 160 and len(payload) % 2 == 0 and leg.slot >= 0:
                    self._decode_odd(leg, payload)
        if not batch:
            return
        k = len(batch)
        codes = np.frombuffer(b"".join([p for _, p in batch]), dtype=np.uint8).reshape(k, 160)
        slots = [leg.slot for leg, _ in batch]
        law = batch[0][0].codec.name
        gains = [leg.gain for leg, _ in batch]
        if all(leg.codec.name == law for leg, _ in batch) and all(g == 1.0 for g in gains):
            stereo = self.bank.upsample(slots, codes, g711.DECODE_FLOAT[law])  # decoded on the way in
        else:
            alaw = [leg.codec.name == "PCMA" for leg, _ in batch]
            if not any(alaw):
                pcm = g711.ULAW_DECODE[codes]
            elif all(alaw):
                pcm = g711.ALAW_DECODE[codes]
            else:
                pcm = np.where(np.array(alaw)[:, None], g711.ALAW_DECODE[codes], g711.ULAW_DECODE[codes])
            if any(g != 1.0 for g in gains):
                pcm = np.clip(pcm * np.array(gains, dtype=np.float32)[:, None], -32767, 32767).astype(np.int16)
            stereo = self.bank.upsample(slots, pcm)
        for (leg, _), block in zip(batch, stereo, strict=True):
            track = leg.track  # read once: the loop may detach it meanwhile
            if track is not None:
                track.push_samples(block)

    def _decode_odd(self, leg: MediaLeg, payload: bytes) -> None:
        """A G.711 packet of another length than 20 ms: alone, with its leg's filter row."""
        pcm = g711.decode(payload, leg.codec.name)[None]
        if leg.gain != 1.0:
            pcm = np.clip(pcm * leg.gain, -32767, 32767).astype(np.int16)
        history = self.bank.up[leg.slot:leg.slot + 1].copy()
        stereo = upsample_8k_stereo(pcm, history)[0]
        self.bank.up[leg.slot] = history[0]
        track = leg.track
        if track is not None:
            track.push_samples(stereo)

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
        pending: list[MediaLeg] = []
        later: list[MediaLeg] = []  # legs with more than one block queued (a late tick)
        for leg in legs:
            mix = leg.mix
            if mix is None or leg.closed:
                continue
            queued = getattr(mix, "queued", MAX_BLOCKS_PER_TICK)  # a prompt player paces itself
            if queued == 0:
                continue  # skip get_nowait's Empty path
            if queued > MAX_BLOCKS_PER_TICK:
                for _ in range(queued - MAX_BLOCKS_PER_TICK):
                    try:
                        mix.get_nowait()
                    except Empty:
                        break
                    leg.ts += leg.codec.samples_per_packet
                    leg.skipped += 1
            pending.append(leg)
            if queued > 1:
                later.append(leg)
        for round_ in range(MAX_BLOCKS_PER_TICK):
            if round_:
                pending, later = later, [leg for leg in later if getattr(leg.mix, "queued", MAX_BLOCKS_PER_TICK) > 1]
            if not pending:
                return
            g711_legs: list[MediaLeg] = []
            g711_blocks: list[np.ndarray] = []
            for leg in pending:
                mix = leg.mix
                if mix is None:
                    continue
                try:
                    _pts, block = mix.get_nowait()
                except Empty:
                    continue
                if leg.remote is None or not leg.sending:
                    leg.ts += leg.codec.samples_per_packet
                elif leg.dtmf_out:
                    self._send_event(leg)
                elif leg.pyav is not None:
                    self._send_pyav(leg, block)
                elif leg.slot >= 0:
                    g711_legs.append(leg)
                    g711_blocks.append(block)
                else:  # joined after this tick's slots were handed out: from the next tick on
                    leg.ts += leg.codec.samples_per_packet
            if g711_legs:
                self._send_g711(g711_legs, g711_blocks)

    def _send_g711(self, legs: list[MediaLeg], blocks: list[np.ndarray]) -> None:
        """One block per leg: downmix, decimate and encode all at once, one sendto each."""
        slots = [leg.slot for leg in legs]
        law = legs[0].codec.name
        if all(leg.codec.name == law for leg in legs):  # filtered and encoded in one batch
            payloads = {law: self.bank.encode(slots, blocks, law)}
        else:
            low = self.bank.downsample(slots, blocks)
            laws = {leg.codec.name for leg in legs}
            payloads = {law: g711.encode(low, law).tobytes() for law in laws}
        pack = rtp.HEADER.pack
        for i, leg in enumerate(legs):  # _emit inlined: this runs per leg per tick
            codec = leg.codec
            seq, ts = leg.seq, leg.ts
            packet = pack(0x80, codec.payload_type, seq, ts & 0xFFFFFFFF, leg.ssrc) + \
                payloads[codec.name][i * 160:(i + 1) * 160]
            leg.seq = (seq + 1) & 0xFFFF
            leg.ts = ts + codec.samples_per_packet
            try:
                leg.rtp_sock.sendto(packet, leg.remote)  # type: ignore[arg-type]
                leg.packets_out += 1
            except OSError:
                pass  # a full buffer or an unreachable peer: the next tick tries again

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
