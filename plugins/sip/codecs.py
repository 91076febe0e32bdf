"""Voice codecs of a leg: G.711 from numpy tables, G.722 and Opus through PyAV, and the
resampling between the bus (48 kHz stereo) and the codec's rate.

The engine filters all G.711 legs of a tick in one batch through a filter bank (the legs'
filter memories as rows of two arrays, the G.711 tables fused in): :class:`NativeG711Bank`,
one C call each way (``plugins/sip/_filterbank.c``, built by the install), or where that
module is missing :class:`G711Bank`, a few stacked numpy products each way;
:func:`new_bank` picks. :func:`upsample_8k_stereo` and :func:`downsample_stereo_8k` are the
same filters on caller-held memories (the reference in the tests, and for odd packet sizes).
G.722 and Opus legs keep a stateful PyAV encoder and decoder each.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from plugins.sip import g711
from plugins.sip.sdp import Codec

try:  # the ufunc itself: np.clip is a Python wrapper around it, which costs more than the clip
    from numpy._core.umath import clip as _clip
except ImportError:  # numpy < 2
    from numpy.core.umath import clip as _clip  # type: ignore[no-redef]

try:
    from plugins.sip import _filterbank
except ImportError:  # not built (a source tree without `pip install`): the numpy bank serves
    _filterbank = None

TAPS = 48  # 8 per phase for the 6:1 (48 <-> 8 kHz) polyphase filters
DOWN_HISTORY = TAPS - 6  # input samples a decimator keeps (a whole number of 6-sample rows)
UP_HISTORY = TAPS // 6 - 1  # input samples an interpolator keeps


def _lowpass(cutoff_hz: float, rate: int = 48000, taps: int = TAPS) -> np.ndarray:
    """A Hamming-windowed sinc low-pass, unity gain at DC (symmetric)."""
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(2 * cutoff_hz / rate * n) * np.hamming(taps)
    return (h / h.sum()).astype(np.float32)


_H8K = _lowpass(3600)
_DOWN_8K = _H8K.reshape(TAPS // 6, 6)  # [q, p]: the taps that meet input row q, phase p
_UP_8K = (6 * _H8K).reshape(TAPS // 6, 6)  # [k, p]: output phase p from input sample n-k
FILTERS = {16000: _lowpass(7200)}
# the same filters on interleaved stereo: the up one writes each phase to both channels, the
# down one averages the two channels (the mono downmix) inside the filter
_UP_8K_STEREO = np.repeat(_UP_8K, 2, axis=1)  # [k, 2p + c]
_DOWN_8K_STEREO = np.repeat(0.5 * _DOWN_8K.T, 2, axis=0).astype(np.float32)  # [2p + c, q]
DOWN_HISTORY_STEREO = 2 * DOWN_HISTORY
BLOCK_OUT = 160  # 8 kHz samples of a 20 ms block


def to_mono(blocks: np.ndarray) -> np.ndarray:
    """(n, 960, 2) int16 to (n, 960) float32."""
    mono = blocks[:, :, 0].astype(np.float32)
    mono += blocks[:, :, 1]
    mono *= 0.5
    return mono


def downsample_batch(mono: np.ndarray, history: np.ndarray, rate: int) -> np.ndarray:
    """(n, 960) 48 kHz rows with their (n, DOWN_HISTORY) history to (n, 960*rate/48k) int16.

    6:1 is polyphase (a few contiguous multiply-adds over (n, 160, 6) views, no window copy);
    `history` is updated in place with the tail of this block (the filter's memory)."""
    if rate == 48000:
        return np.clip(mono, -32767, 32767).astype(np.int16)
    x = np.concatenate([history, mono], axis=1)
    history[:] = x[:, -history.shape[1]:]
    if rate == 8000:
        rows = x.reshape(len(x), -1, 6)
        out = mono.shape[1] // 6
        # z[k, q] = sum_p rows[k, p] * taps[q, p] in one BLAS call; y[k] = sum_q z[k + q, q]
        z = rows @ _DOWN_8K.T
        y = z[:, 0:out, 0].copy()
        for q in range(1, TAPS // 6):
            y += z[:, q:q + out, q]
    else:  # 3:1 for G.722's 16 kHz: rare enough for the plain sliding window
        step = 48000 // rate
        windows = np.lib.stride_tricks.sliding_window_view(x, TAPS, axis=1)[:, ::step]
        y = (windows @ FILTERS[rate])[:, : mono.shape[1] // step]
    return np.clip(y, -32767, 32767).astype(np.int16)


def upsample_8k_batch(samples: np.ndarray, history: np.ndarray) -> np.ndarray:
    """(n, m) 8 kHz int16 rows with their (n, UP_HISTORY) history to (n, 6m) 48 kHz int16."""
    x = np.concatenate([history, samples.astype(np.float32)], axis=1)
    history[:] = x[:, -UP_HISTORY:]
    m = samples.shape[1]
    # windows[:, n, k] = x[n + 7 - k]: input sample n-k for each output group n; one BLAS call
    windows = np.lib.stride_tricks.sliding_window_view(x, TAPS // 6, axis=1)[:, :m, ::-1]
    y = windows @ _UP_8K
    return np.clip(y.reshape(len(x), 6 * m), -32767, 32767).astype(np.int16)


# legs per numpy pass: small temporaries stay in the allocator's heap and the CPU cache, and
# each product stays under OpenBLAS's threading threshold (m*n*k <= 4 * 65536: 16 legs are
# 245760 up, 256512 down): its helper threads spin, which on a busy 2-core host costs more
# than the product itself
CHUNK = 16


def upsample_8k_stereo(samples: np.ndarray, history: np.ndarray) -> list[np.ndarray]:
    """(n, m) 8 kHz int16 rows to n (6m, 2) 48 kHz stereo int16 blocks, the bus format.

    One BLAS call per chunk of legs on contiguous windows (a strided view makes matmul fall
    back to a slow loop); the up filter writes each phase to both channels. Chunks, because
    whole-batch temporaries of a few MB are fresh pages every tick, which costs more in page
    faults than the filtering."""
    out: list[np.ndarray] = []
    m = samples.shape[1]
    for start in range(0, len(samples), CHUNK):
        part, hist = samples[start:start + CHUNK], history[start:start + CHUNK]
        x = np.concatenate([hist, part.astype(np.float32)], axis=1)
        hist[:] = x[:, -UP_HISTORY:]
        windows = np.ascontiguousarray(np.lib.stride_tricks.sliding_window_view(x, TAPS // 6, axis=1)[:, :m, ::-1])
        # one 2-D product per chunk (a 3-D one is a tiny BLAS call per leg): (k*m, 8) @ (8, 12),
        # 6 output samples x 2 channels per input sample
        y = windows.reshape(-1, TAPS // 6) @ _UP_8K_STEREO
        np.clip(y, -32767, 32767, out=y)
        out.extend(y.astype(np.int16).reshape(len(x), 6 * m, 2))
    return out


def downsample_stereo_8k(blocks: list[np.ndarray], history: np.ndarray) -> np.ndarray:
    """(960, 2) int16 48 kHz stereo blocks with their (n, DOWN_HISTORY_STEREO) history to
    (n, 160) int16 8 kHz mono: downmix and 6:1 polyphase decimation in one pass per chunk."""
    n, h = len(blocks), history.shape[1]
    result = np.empty((n, BLOCK_OUT), dtype=np.int16)
    for start in range(0, n, CHUNK):
        part, hist = blocks[start:start + CHUNK], history[start:start + CHUNK]
        k = len(part)
        x = np.empty((k, h + 2 * 960), dtype=np.float32)
        x[:, :h] = hist
        x[:, h:] = np.stack(part).reshape(k, -1)
        hist[:] = x[:, -h:]
        # z[k, row, q]: tap row q of each 6-sample (12-value) input row; y[k] = sum_q z[k, k + q, q]
        z = np.ascontiguousarray((x.reshape(-1, 12) @ _DOWN_8K_STEREO).reshape(k, -1, TAPS // 6).transpose(0, 2, 1))
        y = z[:, 0, 0:BLOCK_OUT].copy()
        for q in range(1, TAPS // 6):
            y += z[:, q, q:q + BLOCK_OUT]
        np.clip(y, -32767, 32767, out=y)
        result[start:start + k] = y
    return result


class _SlotBank:
    """Filter memories of every G.711 leg of an engine, a slot (row) per leg; a new leg's
    slot starts from silence. Only the engine's media thread touches a bank."""

    def __init__(self, capacity: int = 16) -> None:
        self._capacity = 0
        self._free: list[int] = []
        self._grow(capacity)

    @property
    def up(self) -> np.ndarray:
        """(capacity, UP_HISTORY): each slot's up-filter memory (a view: writable)."""
        raise NotImplementedError

    @property
    def down(self) -> np.ndarray:
        """(capacity, DOWN_HISTORY_STEREO): each slot's down-filter memory (a view: writable)."""
        raise NotImplementedError

    def _resize(self, capacity: int) -> None:
        raise NotImplementedError

    def _grow(self, capacity: int) -> None:
        self._resize(capacity)
        self._free = list(range(capacity - 1, self._capacity - 1, -1)) + self._free
        self._capacity = capacity

    def allocate(self) -> int:
        """A slot with empty filter memories (a new leg starts from silence)."""
        if not self._free:
            self._grow(2 * self._capacity)
        slot = self._free.pop()
        self.up[slot] = 0
        self.down[slot] = 0
        return slot

    def release(self, slot: int) -> None:
        if 0 <= slot < self._capacity and slot not in self._free:
            self._free.append(slot)


class NativeG711Bank(_SlotBank):
    """The bank in C (:mod:`plugins.sip._filterbank`): each direction one call for all legs,
    its loops vectorised, the memories two small arrays. Results match the reference filters
    within one LSB, like :class:`G711Bank`'s."""

    def __init__(self, capacity: int = 16) -> None:
        self._up_h = np.zeros((0, UP_HISTORY), dtype=np.float32)
        self._down_h = np.zeros((0, DOWN_HISTORY_STEREO), dtype=np.float32)
        super().__init__(capacity)

    @property
    def up(self) -> np.ndarray:
        return self._up_h[:self._capacity]

    @property
    def down(self) -> np.ndarray:
        return self._down_h[:self._capacity]

    def _resize(self, capacity: int) -> None:
        for name in ("_up_h", "_down_h"):
            old = getattr(self, name)
            buf = np.zeros((capacity, old.shape[1]), dtype=np.float32)
            buf[:len(old)] = old
            setattr(self, name, buf)

    def upsample(self, slots: np.ndarray | list[int], samples: np.ndarray,
                 table: np.ndarray | None = None) -> np.ndarray:
        """See :meth:`G711Bank.upsample`."""
        samples = np.ascontiguousarray(samples)  # a slice of a wider array; a wrong dtype is the C side's error
        out = np.empty((len(samples), 6 * samples.shape[1], 2), dtype=np.int16)  # fresh: rows go onto tracks
        _filterbank.upsample(self._up_h, _slot_list(slots), samples, table, _UP_8K, out)
        return out

    def downsample(self, slots: np.ndarray | list[int], blocks: list[np.ndarray]) -> np.ndarray:
        """See :meth:`G711Bank.downsample`."""
        low = np.empty((len(blocks), BLOCK_OUT), dtype=np.int16)
        _filterbank.decimate(self._down_h, _slot_list(slots), blocks, _H8K, low)
        return low

    def encode(self, slots: list[int], blocks: list[np.ndarray], law: str) -> bytes:
        """See :meth:`G711Bank.encode`."""
        return _filterbank.encode(self._down_h, slots, blocks, _H8K, law == "PCMA")


def _slot_list(slots: np.ndarray | list[int]) -> list[int]:
    return slots.tolist() if isinstance(slots, np.ndarray) else slots


def new_bank(capacity: int = 16) -> _SlotBank:
    """The C bank where its module is built, else the numpy one."""
    return NativeG711Bank(capacity) if _filterbank is not None else G711Bank(capacity)


class G711Bank(_SlotBank):
    """The 8 kHz <-> 48 kHz stereo filters of every G.711 leg of an engine, one batch per tick,
    in numpy (the fallback of :class:`NativeG711Bank`).

    Each leg owns a slot: one row of the up- and one of the down-filter's input buffers, the
    filter memory at its head and the tick's samples after it, kept across ticks. The legs of a
    tick are usually the same slots in the same order (every leg, as they joined): then each
    filter works in place on a slice of its buffer, else on a gathered copy whose memories go
    back. Either way a tick is a handful of numpy calls whatever the number of legs (each
    product one BLAS call per CHUNK legs in C, each under OpenBLAS's threading threshold); on
    a busy machine each call after the 20 ms pause costs tens of µs in cold caches, so their
    number is what a small room pays. Results match :func:`upsample_8k_stereo` /
    :func:`downsample_stereo_8k` (within one LSB: the sums run in another order).
    """

    def __init__(self, capacity: int = 16) -> None:
        self._up_x = np.zeros((0, UP_HISTORY + BLOCK_OUT), dtype=np.float32)
        self._down_x = np.zeros((0, DOWN_HISTORY_STEREO + 12 * BLOCK_OUT), dtype=np.float32)
        self._work: dict[str, np.ndarray] = {}
        self._views: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # strided views of work buffers
        super().__init__(capacity)

    @property
    def up(self) -> np.ndarray:
        return self._up_x[:self._capacity, :UP_HISTORY]

    @property
    def down(self) -> np.ndarray:
        return self._down_x[:self._capacity, :DOWN_HISTORY_STEREO]

    def _resize(self, capacity: int) -> None:
        # rows past the capacity: a tick's product runs over whole chunks of slots
        rows = capacity + max(CHUNK, UP_CHUNK)
        for name in ("_up_x", "_down_x"):
            old = getattr(self, name)
            buf = np.zeros((rows, old.shape[1]), dtype=np.float32)
            buf[:len(old)] = old
            setattr(self, name, buf)

    def _buffer(self, name: str, shape: tuple[int, ...], chunk: int = CHUNK) -> np.ndarray:
        """A work array of at least `shape[0]` rows (padded to whole chunks), reused."""
        rows = -(-shape[0] // chunk) * chunk
        buf = self._work.get(name)
        if buf is None or len(buf) < rows:
            buf = np.zeros((rows + 2 * chunk, *shape[1:]), dtype=np.float32)
            self._work[name] = buf
        return buf[:rows]

    def _rows(self, name: str, slots: list[int], chunk: int) -> tuple[np.ndarray, int, np.ndarray | None]:
        """Where the input rows of `slots` are, padded to whole chunks (the legs' rows first):
        (base, first row, None) when they are consecutive slots in order, as the legs of a
        steady call mostly are: the filter runs in place, nothing to gather or give back;
        else (a work buffer holding a gathered copy, 0, the index to give the memories back
        through)."""
        buf = getattr(self, name)
        k, first = len(slots), slots[0]
        if slots[-1] - first == k - 1 and slots == list(range(first, first + k)):
            return buf, first, None  # the rows past the capacity cover the padding
        index = np.array(slots, dtype=np.intp)
        self._buffer(name, (k, *buf.shape[1:]), chunk)
        work = self._work[name]
        np.take(buf, index, axis=0, out=work[:k])
        return work, 0, index

    def _strided(self, base: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...]) -> np.ndarray:
        """A strided view of a whole buffer, made once per buffer (as_strided is slow Python)."""
        key = (id(base), shape[1:], strides)
        cached = self._views.get(key)
        if cached is None or cached[0] is not base:
            cached = (base, np.lib.stride_tricks.as_strided(base, shape=(len(base), *shape[1:]), strides=strides))
            self._views = {k: v for k, v in self._views.items() if v[0] is self._up_x or v[0] is self._down_x
                           or any(v[0] is w for w in self._work.values())}
            self._views[key] = cached
        return cached[1]

    def _keep(self, name: str, x: np.ndarray, index: np.ndarray | None, k: int, history: int) -> None:
        """Each leg's filter memory for the next tick: the tail of this tick's input."""
        if index is None:
            x[:k, :history] = x[:k, -history:]
        else:
            getattr(self, name)[index, :history] = x[:k, -history:]

    def upsample(self, slots: np.ndarray | list[int], samples: np.ndarray,
                 table: np.ndarray | None = None) -> np.ndarray:
        """(k, 160) 8 kHz int16 of the legs in `slots` to (k, 960, 2) 48 kHz stereo int16; with
        a float `table` (g711.DECODE_FLOAT), `samples` are the G.711 codes, decoded on the way in.

        Blocks of UP_BLOCK input samples: each block's 6 * UP_BLOCK outputs are one product
        of its UP_BLOCK + 7 inputs (with the previous block's tail) by a banded matrix, which
        BLAS runs far faster than the 8-tap polyphase product (K = 8 is too thin for it)."""
        slots = slots.tolist() if isinstance(slots, np.ndarray) else slots
        k = len(slots)
        if not k:
            return np.zeros((0, 6 * BLOCK_OUT, 2), dtype=np.int16)
        base, first, index = self._rows("_up_x", slots, UP_CHUNK)
        blocks = BLOCK_OUT // UP_BLOCK
        windows = self._buffer("up_w", (k, blocks, UP_BLOCK + UP_HISTORY), UP_CHUNK)
        rows = len(windows)
        x = base[first:first + rows]
        if table is None:
            x[:k, UP_HISTORY:] = samples
        else:
            np.take(table, samples, out=x[:k, UP_HISTORY:], mode="wrap")  # codes are < 256: no check
        view = self._strided(base, windows.shape, (base.strides[0], UP_BLOCK * base.strides[1], base.strides[1]))
        np.copyto(windows, view[first:first + rows])
        self._keep("_up_x", x, index, k, UP_HISTORY)
        y = self._buffer("up_y", (k, blocks, 6 * UP_BLOCK), UP_CHUNK)
        chunks = rows // UP_CHUNK
        np.matmul(windows.reshape(chunks, UP_CHUNK * blocks, UP_BLOCK + UP_HISTORY), _UP_BAND,
                  out=y.reshape(chunks, UP_CHUNK * blocks, 6 * UP_BLOCK))
        mono = np.empty((k, 6 * BLOCK_OUT), dtype=np.int16)
        _clip(y[:k].reshape(k, 6 * BLOCK_OUT), -32767, 32767, out=mono, casting="unsafe")  # saturate, narrow
        # mono to interleaved stereo in one pass: a uint16 pattern times 0x10001 is the same
        # 16 bits in both halves of a uint32, i.e. one (L, R) pair; a fresh array, as its
        # rows go onto the tracks, whose subscribers keep them
        pattern = mono.view(np.uint16).astype(np.uint32)
        pattern *= 0x10001
        return pattern.view(np.int16).reshape(k, 6 * BLOCK_OUT, 2)

    def downsample(self, slots: np.ndarray | list[int], blocks: list[np.ndarray]) -> np.ndarray:
        """(960, 2) int16 48 kHz stereo blocks of the legs in `slots` to (k, 160) int16 8 kHz
        mono: downmix and 6:1 polyphase decimation, all legs at once."""
        slots = slots.tolist() if isinstance(slots, np.ndarray) else slots
        if not slots:
            return np.zeros((0, BLOCK_OUT), dtype=np.int16)
        y = self._decimate(slots, blocks, 0.0)
        low = np.empty(y.shape, dtype=np.int16)
        _clip(y, -32767, 32767, out=low, casting="unsafe")
        return low

    def encode(self, slots: list[int], blocks: list[np.ndarray], law: str) -> bytes:
        """:meth:`downsample` and the G.711 encode (`law` PCMU or PCMA) in one: the legs'
        160-byte payloads, one after another. The table (g711.ENCODE_BIASED) is indexed by
        sample + 32768, which the filter adds: a lookup that clips its indices saturates too."""
        y = self._decimate(slots, blocks, 32768.0)
        return g711.ENCODE_BIASED[law].take(y.astype(np.intp), mode="clip").tobytes()

    def _decimate(self, slots: list[int], blocks: list[np.ndarray], bias: float) -> np.ndarray:
        """(k, 160) float32 8 kHz mono (+ bias) of the legs' 48 kHz stereo blocks."""
        k, h = len(slots), DOWN_HISTORY_STEREO
        base, first, index = self._rows("_down_x", slots, CHUNK)
        width = (h + 12 * BLOCK_OUT) // 12  # 6-sample stereo input rows per leg
        z = self._buffer("down_z", (k, width, TAPS // 6))
        rows = len(z)
        x = base[first:first + rows]
        # the blocks straight into the float rows after the memories: one C loop (x[:k] is
        # contiguous, so this reshape is a view)
        np.concatenate([block[None] for block in blocks], axis=0,
                       out=x[:k].reshape(k, -1, 2)[:, h // 2:])
        chunks = rows // CHUNK
        np.matmul(x.reshape(chunks, CHUNK * width, 12), _DOWN_8K_STEREO,
                  out=z.reshape(chunks, CHUNK * width, TAPS // 6))
        self._keep("_down_x", x, index, k, h)
        # y[:, n] = sum_q z[:, n + q, q]: one reduction over a strided view of the work buffer
        zbase = self._work["down_z"]
        diagonal = self._strided(zbase, (rows, BLOCK_OUT, TAPS // 6),
                                 (zbase.strides[0], zbase.strides[1], zbase.strides[1] + zbase.strides[2]))
        y = self._buffer("down_y", (k, BLOCK_OUT))
        np.add.reduce(diagonal[:rows], axis=2, out=y, initial=bias)
        return y[:k]


UP_BLOCK = 16  # input samples per banded product in G711Bank.upsample
UP_CHUNK = 10  # legs per slice of its stacked product: 10 * 10 * 23 * 96 stays under the threshold


def _up_band(block: int) -> np.ndarray:
    """[i, 6m + p]: the weight of window input i (block start - 7 + i) in output 6m + p."""
    band = np.zeros((block + UP_HISTORY, 6 * block), dtype=np.float32)
    for m in range(block):
        for j in range(TAPS // 6):
            band[m + UP_HISTORY - j, 6 * m:6 * m + 6] = _UP_8K[j]
    return band


_UP_BAND = _up_band(UP_BLOCK)


class PyAvCodec:
    """G.722 or Opus: a stateful PyAV encoder and decoder at the codec's sampling rate."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        name = "g722" if codec.name == "G722" else "libopus"
        self.rate = codec.rate
        self.encoder = av.CodecContext.create(name, "w")
        self.encoder.sample_rate = self.rate
        self.encoder.layout = "mono"
        self.encoder.format = "s16"
        if name == "libopus":
            self.encoder.bit_rate = 32000
        self.encoder.open()
        self.decoder = av.CodecContext.create("g722" if name == "g722" else "opus", "r")
        self.decoder.sample_rate = self.rate
        self.decoder.layout = "mono"
        self.pts = 0

    def encode(self, samples: np.ndarray) -> list[bytes]:
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = self.rate
        frame.pts = self.pts
        frame.time_base = Fraction(1, self.rate)
        self.pts += len(samples)
        return [bytes(p) for p in self.encoder.encode(frame)]

    def decode(self, payload: bytes) -> list[av.AudioFrame]:
        try:
            return list(self.decoder.decode(av.Packet(payload)))
        except av.FFmpegError:
            return []


