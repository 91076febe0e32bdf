"""The room's audio mixer: 20 ms ticks over numpy arrays.

Every audio track on the bus is a source, keyed by participant (mic and screen audio of one
participant are summed). Each tick pulls one block per source from its jitter buffer, stacks
the blocks that have audio into one preallocated (n, 960, 2) int16 array, sums them once into
an int32 total, and derives every output from that total:

- mix-minus listeners (a SIP leg, a browser) get ``total - own`` for all of them at once, as one
  vectorised subtraction over the rows of the publishing listeners; listeners that don't
  publish share the total array itself (no copy). A small room (up to SMALL_MIX publishing
  rows) computes every row without checking anything first: in C where
  ``gateway/media/_mixkernel.c`` is built (one pass over the blocks, no stack), else in int32
  numpy, the total as the difference with a silent row after the blocks; either way its cost
  is the number of calls after the 20 ms sleep, in cold caches, not the samples. A large room
  computes only the rows someone needs, in int16 when no result can overflow, and a listener
  whose own block is digitally silent shares the total too;
- composite outputs (recordings, pushes) mix a selection of participants, with a participant
  optionally downmixed to mono in the left or right channel only; like TRTC's audioMixUserList
  they mix at most 16 sources (the loudest), so a large room's open mics don't add up to noise.

Clipping: sums are int32 and saturate to ±32767 when converted back (never wrap). Composite
outputs may add a block-rate peak limiter (``limiter=True``): instant attack (the block's peak
is scaled to -1 dBFS), linear release at 12 dB/s, so loud mixes in recordings are turned down
instead of flat-topped. Mix-minus outputs only saturate: a limiter there would cost a pass per
listener, and clients run their own AGC.

Output arrays are read-only and shared: consumers must not write into them. Mix-minus rows live
in buffers recycled once no consumer holds a view of them (see ``_output_buffer``). A 500-listener
tick costs ~2 ms of CPU (``python -m bench.bench_mixer``); the worker thread runs it every 20 ms
on absolute deadlines, off the asyncio loop. Consumers that batch many outputs can run right
after each tick in that same thread (``add_tick_hook``) instead of waking a thread of their own.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from operator import itemgetter
from queue import Empty
from typing import Any

import av
import numpy as np
import structlog

from gateway.media.audio import BLOCK_MS, BLOCK_SAMPLES, CHANNELS, samples_to_frame
from gateway.media.bus import FrameBus
from gateway.media.jitter import AudioJitterBuffer
from gateway.media.layout.model import AudioSelection
from gateway.media.track import Track, TrackKind

try:
    from gateway.media import _mixkernel
except ImportError:  # not built (a source tree without `pip install`): numpy mixes every room
    _mixkernel = None

log = structlog.get_logger(__name__)

TICK = BLOCK_MS / 1000
MAX_LAG = 0.2  # seconds behind schedule before the worker skips ticks instead of catching up
SAT = 32767  # symmetric saturation: -32768 would make polarity inversion overflow downstream
FLOOR_DB = -127.0  # dBov of silence (RFC 6464 range)
# levels and the active speaker are measured on every LEVEL_TICKS-th tick's blocks (100 ms): a
# meter and a 300 ms speaker hold need no finer grain, and in a small room that measurement
# is a third of the mixer's tick
LEVEL_TICKS = 5
LEVEL_ATTACK = 1 - (1 - 0.5) ** LEVEL_TICKS  # per-measurement smoothing of levels in dB: rise
LEVEL_RELEASE = 1 - (1 - 0.1) ** LEVEL_TICKS  # fast, fall slowly (0.5 and 0.1 per 20 ms)
LEVELS_EVERY = 10  # ticks between on_levels callbacks (200 ms), a multiple of LEVEL_TICKS
LEVEL_STRIDE = 15  # odd stride over interleaved samples: both channels, 128 points per block
SPEAKER_ON_DB = -45.0  # a candidate speaker must be above this ...
SPEAKER_OFF_DB = -55.0  # ... and keeps the floor until it falls below this (hysteresis)
SPEAKER_MARGIN_DB = 6.0  # to take over from a speaker still talking, be this much louder
SPEAKER_HOLD = 300 // (LEVEL_TICKS * BLOCK_MS)  # measurements a challenger must stay loudest (300 ms)
SPEAKER_RELEASE = 1500 // (LEVEL_TICKS * BLOCK_MS)  # measurements of silence (1.5 s) before None
SMALL_MIX = 32  # publishing rows up to which every mix-minus row is computed in int32, unchecked
MAX_COMPOSITE_SOURCES = 16  # like TRTC's audioMixUserList: the 16 loudest of a selection
LIMIT = 29204  # limiter ceiling, -1 dBFS
LIMIT_RELEASE = 10 ** (12 * TICK / 20)  # gain recovery per tick: 12 dB/s
DEFAULT_QUEUE_BLOCKS = 10  # 200 ms per output before the oldest block is dropped
OUTPUT_POOL = 16  # recycled mix-minus buffers: a full default queue holds 10, consumers a few

_SILENCE = np.zeros((BLOCK_SAMPLES, CHANNELS), dtype=np.int16)
_SILENCE.flags.writeable = False

Block = tuple[int, np.ndarray]


class MixOutput:
    """One mixed stream: a bounded queue of (pts, (960, 2) int16) blocks.

    The mixer never waits for a consumer: when the queue is full the oldest block is dropped.
    """

    def __init__(self, participant_id: str | None, selection: AudioSelection | None = None, *,
                 limiter: bool = False, max_sources: int | None = MAX_COMPOSITE_SOURCES,
                 maxsize: int = DEFAULT_QUEUE_BLOCKS) -> None:
        self.participant_id = participant_id  # None for composite outputs
        self.selection = selection
        self.limiter = limiter
        self.max_sources = max_sources
        self.maxsize = maxsize
        self.consumed = 0
        self.dropped = 0
        self.closed = False
        self._gain = 1.0
        # a deque append is atomic and ~20x cheaper than queue.Queue.put; consumers that block
        # register as waiters so the mixer only signals when someone is actually waiting
        self._queue: deque[Block] = deque(maxlen=maxsize)
        self._ready = threading.Event()
        self._waiters = 0
        self._wlock = threading.Lock()
        self._mixer: AudioMixer | None = None  # set by the mixer that fills it

    def __repr__(self) -> str:
        who = f"listener {self.participant_id}" if self.participant_id is not None else "composite"
        return f"<MixOutput {who} queued={len(self._queue)} dropped={self.dropped}>"

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def produced(self) -> int:
        # derived rather than counted: one attribute update less per listener per tick
        return self.consumed + self.dropped + len(self._queue)

    def _put(self, pts: int, samples: np.ndarray) -> None:
        # AudioMixer._mix_minus inlines this for listeners; keep the two in step
        queue = self._queue
        if len(queue) == self.maxsize:
            self.dropped += 1
        queue.append((pts, samples))
        if self._waiters:
            self._ready.set()

    def get(self, timeout: float | None = None) -> Block:
        """The next (pts, samples) block; raises queue.Empty after `timeout` seconds."""
        try:
            block = self._queue.popleft()
        except IndexError:
            block = self._wait(timeout)
        self.consumed += 1
        return block

    def get_nowait(self) -> Block:
        return self.get(timeout=0)

    def _wait(self, timeout: float | None) -> Block:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._wlock:
            self._waiters += 1
        try:
            while True:
                self._ready.clear()
                # re-check after registering: a block appended before the clear is seen here,
                # one appended after it sets the event
                try:
                    return self._queue.popleft()
                except IndexError:
                    pass
                if self.closed:
                    raise Empty
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise Empty
                self._ready.wait(remaining)
        finally:
            with self._wlock:
                self._waiters -= 1

    def wait_ready(self, timeout: float) -> bool:
        """Wait until a block is queued without taking it (a consumer that batches many
        outputs uses one of them as its clock: it runs right after the mixer's tick)."""
        if self._queue:
            return True
        deadline = time.monotonic() + timeout
        with self._wlock:
            self._waiters += 1
        try:
            while True:
                self._ready.clear()
                if self._queue:
                    return True
                remaining = deadline - time.monotonic()
                if self.closed or remaining <= 0:
                    return False
                self._ready.wait(remaining)
        finally:
            with self._wlock:
                self._waiters -= 1

    def after_tick(self, fn: Callable[[], Any]) -> Callable[[], None] | None:
        """Run `fn` in the mixer's thread right after each of its ticks (see
        :meth:`AudioMixer.add_tick_hook`); returns the unregister function, None when no mixer
        fills this output."""
        mixer = self._mixer
        return None if mixer is None else mixer.add_tick_hook(fn)

    def frame(self, timeout: float | None = None) -> av.AudioFrame:
        """The next block as an s16 stereo 48 kHz AudioFrame stamped with its room-clock pts."""
        pts, samples = self.get(timeout)
        return samples_to_frame(samples, pts)

    def _close(self) -> None:
        self.closed = True
        self._ready.set()


class _Source:
    """A participant's audio: one block per tick summed over its tracks, None when silent."""

    def __init__(self, participant_id: str, subs: tuple[tuple[Track, AudioJitterBuffer], ...]) -> None:
        self.participant_id = participant_id
        self.subs = subs

    def pull(self) -> np.ndarray | None:
        out: np.ndarray | None = None
        for track, sub in self.subs:
            if track.muted:
                sub.clear()  # drop what was queued before the mute: no stale audio on unmute
                continue
            block = sub.pull()
            if block is None:
                continue
            if out is None:
                out = block
            else:
                acc = out.astype(np.int32) + block
                out = np.clip(acc, -SAT, SAT, out=acc).astype(np.int16)
        return out


class _OneTrackSource(_Source):
    """The common case, without the loop: this runs once per participant per tick."""

    def __init__(self, participant_id: str, subs: tuple[tuple[Track, AudioJitterBuffer], ...]) -> None:
        super().__init__(participant_id, subs)
        self.track, self.sub = subs[0]

    def pull(self) -> np.ndarray | None:
        if self.track.muted:
            self.sub.clear()
            return None
        return self.sub.pull()


class AudioMixer:
    def __init__(self, bus: FrameBus, *, jitter_ms: int = 60,
                 on_levels: Callable[[dict[str, float]], Any] | None = None,
                 on_active_speaker: Callable[[str | None], Any] | None = None, on_demand: bool = False) -> None:
        self.bus = bus
        # on demand: subscribe to the tracks (so they decode) and tick only while an output or a
        # listener exists; a room nobody hears (an RTMP publisher pushed on untouched) costs nothing
        self.on_demand = on_demand
        self.clock = bus.clock
        self.jitter_ms = jitter_ms
        self.on_levels = on_levels
        self.on_active_speaker = on_active_speaker
        self.active_speaker: str | None = None
        self.ticks = 0
        self.skipped_ticks = 0
        self.start_pts: int | None = None

        self._lock = threading.Lock()  # guards _subs, _dirty and the output tuples
        self._subs: dict[str, tuple[Track, AudioJitterBuffer]] = {}  # by track_id
        self._idle: dict[str, Track] = {}  # on demand, with no output: known tracks, not subscribed
        self._demand = threading.Event()  # set while the mixer has to tick
        if not on_demand:
            self._demand.set()
        self._dirty = True
        self._listeners: tuple[MixOutput, ...] = ()
        self._composites: tuple[MixOutput, ...] = ()
        self._after_tick: tuple[Callable[[], Any], ...] = ()  # run by the worker after each tick

        # touched by the ticking thread only (rebuilt lazily from _subs at the next tick)
        self._sources: tuple[_Source, ...] = ()
        self._level = np.zeros(0)
        self._levels_view: tuple[tuple[_Source, ...], np.ndarray] = ((), self._level)  # one swap for readers
        self._index: dict[str, int] = {}
        self._tick_index = 0
        self._flat = np.zeros((0, CHANNELS), dtype=np.int16)
        self._scratch = np.zeros((0, BLOCK_SAMPLES, CHANNELS), dtype=np.int32)
        self._pool: list[np.ndarray] = []  # mix-minus output buffers, see _output_buffer
        self._mapping: tuple[Any, ...] | None = None  # _mix_minus's row picks, see _picks
        self._pending: str | None = None
        self._pending_count = 0  # measurements the pending challenger has stayed loudest
        self._quiet_count = 0  # measurements the active speaker has been quiet

        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

        self._unlisten = bus.listen(self._on_bus)
        for track in bus.tracks(kind=TrackKind.AUDIO):
            self._attach(track)

    # ---------------------------------------------------------------- sources
    def _on_bus(self, what: str, track: Track) -> None:
        if track.kind is not TrackKind.AUDIO:
            return
        if what == "added":
            self._attach(track)
        elif what == "removed":
            self._detach(track)

    def _attach(self, track: Track) -> None:
        with self._lock:
            if track.track_id in self._subs or track.track_id in self._idle or track.closed:
                return  # closed: removed while we started
            if not self._wanted():
                self._idle[track.track_id] = track
                return
            self._subs[track.track_id] = (track, track.subscribe_audio(target_ms=self.jitter_ms))
            self._dirty = True

    def _detach(self, track: Track) -> None:
        with self._lock:
            entry = self._subs.pop(track.track_id, None)
            self._idle.pop(track.track_id, None)
            self._dirty = True
        if entry is not None:
            track.unsubscribe(entry[1])
            entry[1].clear()  # a tick already holding the old source list pulls silence

    def _rebuild(self) -> None:
        with self._lock:
            self._dirty = False
            grouped: dict[str, list[tuple[Track, AudioJitterBuffer]]] = {}
            for track, sub in self._subs.values():
                grouped.setdefault(track.participant_id, []).append((track, sub))
        old = {s.participant_id: float(self._level[i]) for i, s in enumerate(self._sources)}
        self._sources = tuple((_OneTrackSource if len(subs) == 1 else _Source)(pid, tuple(subs))
                              for pid, subs in grouped.items())
        self._level = np.array([old.get(pid, FLOOR_DB) for pid in grouped], dtype=np.float64)
        self._index = {pid: i for i, pid in enumerate(grouped)}
        self._levels_view = (self._sources, self._level)
        if self.active_speaker is not None and self.active_speaker not in self._index:
            self._set_speaker(None)
        if self._pending not in self._index:
            self._pending = None

    # ---------------------------------------------------------------- outputs
    def add_listener(self, participant_id: str, *, maxsize: int = DEFAULT_QUEUE_BLOCKS) -> MixOutput:
        """A mix-minus output: everyone but `participant_id`."""
        out = MixOutput(participant_id, maxsize=maxsize)
        out._mixer = self
        with self._lock:
            self._listeners = (*self._listeners, out)
        self._update_demand()
        return out

    def add_output(self, selection: AudioSelection | None = None, *, limiter: bool = False,
                   max_sources: int | None = MAX_COMPOSITE_SOURCES,
                   maxsize: int = DEFAULT_QUEUE_BLOCKS) -> MixOutput:
        """A composite mix of `selection` (None: everyone); at most `max_sources` loudest."""
        out = MixOutput(None, selection, limiter=limiter, max_sources=max_sources, maxsize=maxsize)
        out._mixer = self
        with self._lock:
            self._composites = (*self._composites, out)
        self._update_demand()
        return out

    def add_tick_hook(self, fn: Callable[[], Any]) -> Callable[[], None]:
        """Run `fn` in the worker thread right after every tick; returns its unregister function.

        For a consumer that batches many outputs (an edge moving the media of all its legs):
        running in the mixer's thread, right after the mix, it needs no thread of its own woken
        by an Event every 20 ms, and the two never hand the GIL to each other mid-tick. `fn`
        must be quick (it delays the next tick) and never raise into the mixer (it is logged).
        Only the worker thread calls hooks: :meth:`tick` called directly (tests) does not.
        """
        with self._lock:
            self._after_tick = (*self._after_tick, fn)

        def remove() -> None:
            with self._lock:
                self._after_tick = tuple(f for f in self._after_tick if f is not fn)
        return remove

    def set_selection(self, out: MixOutput, selection: AudioSelection | None) -> None:
        if out.participant_id is not None:
            raise ValueError("a mix-minus output hears everyone but its participant; it has no selection")
        out.selection = selection  # one attribute swap; the next tick reads it once

    def remove_output(self, out: MixOutput) -> None:
        with self._lock:
            self._listeners = tuple(o for o in self._listeners if o is not out)
            self._composites = tuple(o for o in self._composites if o is not out)
        out._close()
        self._update_demand()

    def _wanted(self) -> bool:
        """Whether anyone needs the mix (call under the lock)."""
        return not self.on_demand or bool(self._listeners or self._composites)

    def _update_demand(self) -> None:
        """On demand: subscribe to every known track when the first output comes, let them go
        (their decoders idle) when the last one leaves."""
        if not self.on_demand:
            return
        dropped: list[tuple[Track, AudioJitterBuffer]] = []
        with self._lock:
            wanted = self._wanted()
            if wanted and self._idle:
                for track_id, track in self._idle.items():
                    if not track.closed:
                        self._subs[track_id] = (track, track.subscribe_audio(target_ms=self.jitter_ms))
                self._idle.clear()
                self._dirty = True
            elif not wanted and self._subs:
                dropped = list(self._subs.values())
                self._idle = {track.track_id: track for track, _ in dropped}
                self._subs.clear()
                self._dirty = True
            if wanted:
                self._demand.set()
            else:
                self._demand.clear()
        for track, sub in dropped:
            track.unsubscribe(sub)
            sub.clear()

    @property
    def levels(self) -> dict[str, float]:
        """Smoothed level per participant, in dBov (-127 is silence)."""
        sources, level = self._levels_view
        return {s.participant_id: round(float(db), 1) for s, db in zip(sources, level, strict=False)}

    # ---------------------------------------------------------------- the tick
    def tick(self) -> int:
        """Mix one 20 ms block into every output; returns its pts (48 kHz room clock)."""
        if self._dirty:
            self._rebuild()
        if self.start_pts is None:
            self.start_pts = self.clock.audio_pts()
        pts = self.start_pts + self._tick_index * BLOCK_SAMPLES
        self._tick_index += 1
        self.ticks += 1

        sources = self._sources
        pulled = [src.pull() for src in sources]
        active = [i for i, block in enumerate(pulled) if block is not None]  # source of each row
        blocks = pulled if len(active) == len(pulled) else [pulled[i] for i in active]
        level_tick = self.ticks % LEVEL_TICKS == 0 and bool(sources)
        listeners, composites = self._listeners, self._composites
        if listeners and active and len(active) <= SMALL_MIX and _mixkernel is not None:
            total16 = self._mix_minus_native(listeners, pts, blocks, active, level_tick)
            if composites:
                self._mix_composites(composites, pts, lambda: self._stack(blocks)[:-1], active, total16)
            return self._finish_tick(pts)

        rows = self._stack(blocks)  # the blocks, then a silent row
        stack = rows[:-1]
        if level_tick:
            self._update_levels(stack, active)
            self._update_speaker()
        if not active:
            total32, total16 = None, _SILENCE
            if listeners:
                for out in listeners:
                    out._put(pts, _SILENCE)
        else:
            total32 = rows.sum(axis=0, dtype=np.int32)
            if listeners and len(active) <= SMALL_MIX:
                total16 = self._mix_minus_small(listeners, pts, rows, active, total32)
            else:
                total16 = self._clip16(total32)
                if listeners:
                    self._mix_minus(listeners, pts, stack, active, total32, total16)
        if composites:
            self._mix_composites(composites, pts, lambda: stack, active, total16)
        return self._finish_tick(pts)

    def _finish_tick(self, pts: int) -> int:
        if self.on_levels is not None and self.ticks % LEVELS_EVERY == 0:
            self._callback(self.on_levels, self.levels)
        return pts

    def _stack(self, blocks: list[np.ndarray]) -> np.ndarray:
        """The blocks and a silent row after them, as one (n + 1, 960, 2) int16 view of a buffer
        reused across ticks (the silent row's total - 0 is the total)."""
        rows = (len(blocks) + 1) * BLOCK_SAMPLES
        if rows > len(self._flat):
            self._flat = np.empty((max(rows, 2 * len(self._flat)), CHANNELS), dtype=np.int16)
        flat = self._flat[:rows]
        np.concatenate([*blocks, _SILENCE], axis=0, out=flat)  # one C loop instead of n row assignments
        return flat.reshape(len(blocks) + 1, BLOCK_SAMPLES, CHANNELS)

    @staticmethod
    def _clip16(total32: np.ndarray) -> np.ndarray:
        total16 = np.clip(total32, -SAT, SAT).astype(np.int16)
        total16.flags.writeable = False
        return total16

    def _update_levels(self, stack: np.ndarray, active: list[int]) -> None:
        """Smooth the levels with this tick's blocks (a measurement every LEVEL_TICKS ticks)."""
        power = None
        if active:
            # RMS over a decimated view: a level meter needs no more than 128 points per block
            points = stack.reshape(len(active), -1)[:, ::LEVEL_STRIDE].astype(np.float64)
            power = np.einsum("ij,ij->i", points, points) / points.shape[1]
        self._apply_levels(power, active)

    def _apply_levels(self, power: np.ndarray | None, active: list[int]) -> None:
        """Smooth the levels with the mean squares of this tick's blocks (of `active` sources)."""
        new = np.full(len(self._sources), FLOOR_DB)
        if power is not None:
            with np.errstate(divide="ignore"):
                db = 10 * np.log10(power / (32768.0 * 32768.0))
            new[active] = np.maximum(db, FLOOR_DB)
        level = self._level
        rate = np.where(new > level, LEVEL_ATTACK, LEVEL_RELEASE)
        level += (new - level) * rate

    def _update_speaker(self) -> None:
        level, index = self._level, self._index
        if not len(level):
            return
        loud = int(level.argmax())
        loud_db, loud_pid = float(level[loud]), self._sources[loud].participant_id
        current = self.active_speaker
        talking = current is not None and level[index[current]] >= SPEAKER_OFF_DB
        # to take the floor from someone still talking, be clearly louder than them
        bar = max(SPEAKER_ON_DB, float(level[index[current]]) + SPEAKER_MARGIN_DB) if talking else SPEAKER_ON_DB
        pending = self._pending
        if pending is not None and level[index[pending]] >= max(bar, loud_db - SPEAKER_MARGIN_DB):
            # near-equal talkers swap the top spot tick by tick: staying close to the loudest
            # keeps the candidate's count, so one of them does win
            self._pending_count += 1
        elif loud_pid != current and loud_db >= bar:
            self._pending, self._pending_count = loud_pid, 1
        else:
            self._pending = None
        self._quiet_count = 0 if talking else self._quiet_count + 1
        if self._pending is not None and self._pending_count >= SPEAKER_HOLD:
            self._set_speaker(self._pending)
        elif current is not None and self._pending is None and self._quiet_count >= SPEAKER_RELEASE:
            self._set_speaker(None)

    def _set_speaker(self, participant_id: str | None) -> None:
        self._pending, self._quiet_count = None, 0
        if participant_id == self.active_speaker:
            return
        self.active_speaker = participant_id
        if self.on_active_speaker is not None:
            self._callback(self.on_active_speaker, participant_id)

    def _picks(self, listeners: tuple[MixOutput, ...], active: list[int]) -> tuple[Any, ...]:
        """Which row each listener hears, cached until the listeners, the sources or the set of
        publishing sources change (in a steady room: never): (key, own, needed, small-room pick).

        `own`: each listener's own row in the stack, len(active) (the silent row after the
        blocks) for a listener that does not publish or was silent this tick; `needed`: the
        rows some listener hears total - own of; the pick takes each listener's block from the
        rows of a small room's output buffer."""
        sources = self._sources
        all_active = len(active) == len(sources)
        mapping = self._mapping
        if mapping is not None and mapping[0] is listeners and mapping[1] is sources and \
                (mapping[2] is None if all_active else mapping[2] == active):
            return mapping
        n, index = len(active), self._index
        row_of = dict.fromkeys(range(len(sources)), n)
        row_of.update(zip(active, range(n), strict=True))
        own = [row_of.get(index.get(out.participant_id, -1), n) for out in listeners]  # type: ignore[arg-type]
        needed = np.array(sorted(set(own) - {n}), dtype=np.intp)
        pick = itemgetter(*own)
        mapping = (listeners, sources, None if all_active else list(active),
                   np.array(own, dtype=np.intp), needed,
                   pick if len(own) > 1 else (lambda rows, _one=own[0]: (rows[_one],)))
        self._mapping = mapping
        return mapping

    def _deliver(self, listeners: tuple[MixOutput, ...], pts: int, picked: Any) -> None:
        for out, samples in zip(listeners, picked, strict=True):
            # MixOutput._put, inlined: this loop runs once per listener per tick
            queue = out._queue
            if len(queue) == out.maxsize:
                out.dropped += 1
            queue.append((pts, samples))
            if out._waiters:
                out._ready.set()

    def _mix_minus_small(self, listeners: tuple[MixOutput, ...], pts: int, rows: np.ndarray, active: list[int],
                         total32: np.ndarray) -> np.ndarray:
        """A small room: total - own for every row, the silent one included (which gives the
        total), in two passes over a few hundred KB, and no check of which rows anyone needs
        or whether they can overflow: here the passes cost less than the checks. Returns the
        int16 total."""
        pick = self._picks(listeners, active)[5]
        k = len(rows)
        if len(self._scratch) < k:
            self._scratch = np.empty((max(k, SMALL_MIX + 1), BLOCK_SAMPLES, CHANNELS), dtype=np.int32)
        diff = self._scratch[:k]
        np.subtract(total32, rows, out=diff)
        mixed = self._output_buffer(k)
        np.clip(diff, -SAT, SAT, out=mixed, casting="unsafe")  # saturate and narrow in one pass
        mixed.flags.writeable = False
        views = list(mixed)  # one view per row: listeners hearing the same row share one object
        self._deliver(listeners, pts, pick(views))
        return views[-1]

    def _mix_minus_native(self, listeners: tuple[MixOutput, ...], pts: int, blocks: list[np.ndarray],
                          active: list[int], level_tick: bool) -> np.ndarray:
        """A small room in C (:mod:`gateway.media._mixkernel`): every row's total - own and the
        total in one pass over the blocks as they came (no stack), the level meter's mean
        squares with it on a level tick. Returns the int16 total."""
        pick = self._picks(listeners, active)[5]
        k = len(blocks)
        mixed = self._output_buffer(k + 1)
        power = np.empty(k) if level_tick else None
        _mixkernel.mix_minus(blocks, mixed, power, LEVEL_STRIDE)
        mixed.flags.writeable = False
        views = list(mixed)  # row k, the total, is what a listener that does not publish hears
        self._deliver(listeners, pts, pick(views))
        if level_tick:
            self._apply_levels(power, active)
            self._update_speaker()
        return views[-1]

    def _mix_minus(self, listeners: tuple[MixOutput, ...], pts: int, stack: np.ndarray, active: list[int],
                   total32: np.ndarray, total16: np.ndarray) -> None:
        """A large room: total - own only for the rows somebody needs, in int16 when no result
        can leave it; a listener whose own block is digitally silent (a browser mic muted
        with track.enabled=false sends zeros) shares the total."""
        _key, _sources, _active, own, needed, _pick = self._picks(listeners, active)
        n = len(active)
        if len(needed):
            # per-row peaks: silent rows (share the total) and the largest own sample
            high = stack.max(axis=(1, 2))
            low = stack.min(axis=(1, 2))
            loud = needed[(high[needed] != 0) | (low[needed] != 0)]
            if len(loud) != len(needed):
                needed = loud
        position = np.full(n + 1, len(needed), dtype=np.intp)  # default: the shared total
        position[needed] = np.arange(len(needed))
        if len(needed):
            peak_own = max(int(high[needed].max()), -int(low[needed].min()))
            arrays = [*self._subtract(stack, needed, total32, total16, peak_own), total16]
        else:
            arrays = [total16]
        picked = itemgetter(*position[own].tolist())(arrays)
        self._deliver(listeners, pts, (picked,) if len(listeners) == 1 else picked)

    def _subtract(self, stack: np.ndarray, needed: np.ndarray, total32: np.ndarray, total16: np.ndarray,
                  peak_own: int) -> np.ndarray:
        """total - own for the `needed` rows of the stack, in one vectorised pass."""
        own = stack if len(needed) == len(stack) else stack[needed]
        peak_total = max(int(total32.max()), -int(total32.min()))
        mixed = self._output_buffer(len(needed))
        if peak_total + peak_own <= SAT:
            np.subtract(total16, own, out=mixed)  # no result can leave int16: skip the int32 round trip
        else:
            if len(self._scratch) < len(needed):
                self._scratch = np.empty((len(needed) + len(needed) // 4, BLOCK_SAMPLES, CHANNELS), dtype=np.int32)
            diff = self._scratch[: len(needed)]
            np.subtract(total32, own, out=diff, dtype=np.int32)
            np.clip(diff, -SAT, SAT, out=mixed, casting="unsafe")
        mixed.flags.writeable = False
        return mixed

    def _output_buffer(self, rows: int) -> np.ndarray:
        """A (rows, 960, 2) int16 array for this tick's mix-minus blocks.

        Consumers hold views of it (queued or being encoded), so it can only be reused once
        nobody does: a view keeps its base alive, so the base's refcount says exactly that.
        Reuse matters: a fresh multi-megabyte array every tick costs more in page faults than
        the arithmetic that fills it.
        """
        pool = self._pool
        for k in range(len(pool)):
            # references: the pool, and getrefcount's own argument
            if sys.getrefcount(pool[k]) == 2:
                if len(pool[k]) < rows:
                    pool[k] = np.empty((rows + rows // 4, BLOCK_SAMPLES, CHANNELS), dtype=np.int16)
                return pool[k][:rows]
        buffer = np.empty((rows + rows // 4, BLOCK_SAMPLES, CHANNELS), dtype=np.int16)
        if len(pool) < OUTPUT_POOL:
            pool.append(buffer)
        return buffer[:rows]

    def _mix_composites(self, composites: tuple[MixOutput, ...], pts: int, stack_of: Callable[[], np.ndarray],
                        active: list[int], total16: np.ndarray) -> None:
        """`stack_of()`: the blocks stacked, made only for an output that needs more than the total."""
        sources, level = self._sources, self._level
        stacked: list[np.ndarray] = []

        def stack_rows(index: Any) -> np.ndarray:
            if not stacked:
                stacked.append(stack_of())
            return stacked[0] if index is None else stacked[0][index]

        cache: dict[tuple[Any, ...], np.ndarray] = {}
        for out in composites:
            selection = out.selection
            wanted = None if selection is None or selection.participants is None else set(selection.participants)
            channels = {} if selection is None else selection.channels
            key = (None if wanted is None else frozenset(wanted), tuple(sorted(channels.items())),
                   out.max_sources)
            if not out.limiter and key in cache:
                out._put(pts, cache[key])
                continue
            rows = [row for row, i in enumerate(active)
                    if wanted is None or sources[i].participant_id in wanted]
            if out.max_sources is not None and len(rows) > out.max_sources:
                rows.sort(key=lambda row: -level[active[row]])
                rows = sorted(rows[: out.max_sources])
            sides = {row: channels.get(sources[active[row]].participant_id, "both") for row in rows}
            if len(rows) == len(active) and "left" not in sides.values() and "right" not in sides.values():
                if not out.limiter:
                    cache[key] = total16
                    out._put(pts, total16)
                    continue
                acc = stack_rows(None).sum(axis=0, dtype=np.int32)
            else:
                acc = np.zeros((BLOCK_SAMPLES, CHANNELS), dtype=np.int32)
                both = [row for row in rows if sides[row] == "both"]
                if both:
                    acc += stack_rows(both).sum(axis=0, dtype=np.int32)
                for side, channel in (("left", 0), ("right", 1)):
                    picked = [row for row in rows if sides[row] == side]
                    if picked:
                        summed = stack_rows(picked).sum(axis=0, dtype=np.int32)
                        acc[:, channel] += (summed[:, 0] + summed[:, 1]) >> 1  # downmix to mono
            if out.limiter:
                acc = _limit(out, acc)
            mixed = np.clip(acc, -SAT, SAT, out=acc).astype(np.int16)
            mixed.flags.writeable = False
            if not out.limiter:
                cache[key] = mixed
            out._put(pts, mixed)

    def _callback(self, fn: Callable[[Any], Any], arg: Any) -> None:
        try:
            fn(arg)
        except Exception:  # a broken observer must not stop the audio
            log.exception("mixer callback failed", callback=getattr(fn, "__name__", repr(fn)))

    # ---------------------------------------------------------------- the worker thread
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        if self.start_pts is None:
            self.start_pts = self.clock.audio_pts()
        self._thread = threading.Thread(target=self._run, name="audio-mixer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout=2)

    def close(self) -> None:
        """Stop, leave the bus and drop every subscription and output."""
        self.stop()
        self._unlisten()
        with self._lock:
            subs = list(self._subs.values())
            self._subs.clear()
            self._idle.clear()
            self._dirty = True
            outputs = (*self._listeners, *self._composites)
            self._listeners = self._composites = ()
        for track, sub in subs:
            track.unsubscribe(sub)
        for out in outputs:
            out._close()

    def _run(self) -> None:
        deadline = time.monotonic()  # absolute deadlines: sleep jitter never accumulates
        while not self._stop.is_set():
            if not self._demand.is_set():  # on demand and nobody listens: no ticks
                if not self._demand.wait(0.1):
                    continue
                self._resume()
                deadline = time.monotonic()
            late = time.monotonic() - deadline
            if late < 0:
                if self._stop.wait(-late):
                    return
            elif late > MAX_LAG:
                self._skip(int(late / TICK))
                deadline += int(late / TICK) * TICK
            try:
                self.tick()
            except Exception:
                log.exception("mixer tick failed")
            for fn in self._after_tick:
                try:
                    fn()
                except Exception:  # a broken hook must not stop the audio
                    log.exception("mixer tick hook failed", hook=getattr(fn, "__name__", repr(fn)))
            deadline += TICK

    def _resume(self) -> None:
        """After an idle spell: carry on at the room clock's present, so pts stay on it."""
        if self.start_pts is not None:
            now = (self.clock.audio_pts() - self.start_pts) // BLOCK_SAMPLES
            self._tick_index = max(self._tick_index, now)

    def _skip(self, count: int) -> None:
        """After a stall, jump ahead so pts stays on the room clock; re-prime the jitter
        buffers so the stall doesn't stay on as extra latency."""
        self._tick_index += count
        self.skipped_ticks += count
        log.warning("audio mixer fell behind, skipping ticks", skipped=count)
        for src in self._sources:
            for _track, sub in src.subs:
                sub.clear()


def _limit(out: MixOutput, acc: np.ndarray) -> np.ndarray:
    """Block-rate peak limiter: instant attack to LIMIT, linear release at 12 dB/s."""
    peak = max(int(acc.max()), -int(acc.min()))
    target = 1.0 if peak <= LIMIT else LIMIT / peak
    before = out._gain
    after = target if target < before else min(target, before * LIMIT_RELEASE, 1.0)
    out._gain = after
    if before == after == 1.0:
        return acc
    if after < before:
        gain: np.ndarray | float = after  # step down at the block edge: the peak never overshoots
    else:
        gain = np.linspace(before, after, BLOCK_SAMPLES)[:, None]
    return np.rint(acc * gain).astype(np.int32)
