"""Voice codecs of a leg: G.711 from numpy tables, G.722 and Opus through PyAV, and the
resampling between the bus (48 kHz stereo) and the codec's rate.

The engine encodes all G.711 legs of a tick in one batch (:func:`downsample_batch` then one
table lookup); G.722 and Opus legs keep a stateful PyAV encoder and decoder each.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from plugins.sip.sdp import Codec

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


