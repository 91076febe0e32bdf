"""Voice codecs of a leg: G.711 from numpy tables, G.722 and Opus through PyAV, and the
resampling between the bus (48 kHz stereo) and the codec's rate.

The engine encodes all G.711 legs of a tick in one batch (:func:`downsample_batch` then one
table lookup); G.722 and Opus legs keep a stateful PyAV encoder and decoder each.
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from plugins.sip import g711
from plugins.sip.sdp import Codec

TAPS = 48


def _lowpass(cutoff_hz: float, rate: int = 48000, taps: int = TAPS) -> np.ndarray:
    """A Hamming-windowed sinc low-pass, unity gain at DC."""
    n = np.arange(taps) - (taps - 1) / 2
    h = np.sinc(2 * cutoff_hz / rate * n) * np.hamming(taps)
    return (h / h.sum()).astype(np.float32)


FILTERS = {8000: _lowpass(3600), 16000: _lowpass(7200)}


def downsample_batch(mono: np.ndarray, history: np.ndarray, rate: int) -> np.ndarray:
    """(n, 960) 48 kHz rows (float32) with their (n, TAPS-1) history, to (n, 960*rate/48k) int16.

    `history` is updated in place with the tail of this block (the filter's memory)."""
    step = 48000 // rate
    if step == 1:
        return np.clip(mono, -32767, 32767).astype(np.int16)
    x = np.concatenate([history, mono], axis=1)
    history[:] = x[:, -(TAPS - 1):]
    windows = np.lib.stride_tricks.sliding_window_view(x, TAPS, axis=1)[:, ::step]
    y = windows @ FILTERS[rate][::-1]
    return np.clip(y[:, : mono.shape[1] // step], -32767, 32767).astype(np.int16)


def to_mono(blocks: np.ndarray) -> np.ndarray:
    """(n, 960, 2) int16 to (n, 960) float32."""
    return blocks.astype(np.float32).mean(axis=2)


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


def g711_decode(payload: bytes, name: str) -> np.ndarray:
    return g711.decode(payload, name)


def g711_encode(samples: np.ndarray, name: str) -> np.ndarray:
    return g711.encode(samples, name)
