"""Audio conventions of the bus: 48 kHz, stereo, signed 16-bit, 20 ms blocks."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from gateway.media.clock import AUDIO_RATE

CHANNELS = 2
BLOCK_MS = 20
BLOCK_SAMPLES = AUDIO_RATE * BLOCK_MS // 1000  # 960


def new_resampler() -> av.AudioResampler:
    """A resampler to the bus format; stateful, so one per source."""
    return av.AudioResampler(format="s16", layout="stereo", rate=AUDIO_RATE)


def frame_to_samples(frame: av.AudioFrame) -> np.ndarray:
    """An s16 stereo packed frame as an (n, 2) int16 array (a copy)."""
    return frame.to_ndarray().reshape(-1, CHANNELS)


def samples_to_frame(samples: np.ndarray, pts: int | None = None) -> av.AudioFrame:
    """An (n, 2) int16 array as an s16 stereo AudioFrame at 48 kHz."""
    frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples, dtype=np.int16).reshape(1, -1),
                                       format="s16", layout="stereo")
    frame.sample_rate = AUDIO_RATE
    frame.time_base = Fraction(1, AUDIO_RATE)
    frame.pts = pts
    return frame
