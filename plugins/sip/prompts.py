"""Voice prompts for PIN entry: made once (espeak-ng, or tones when it is missing), kept as
WAV files, and played to a leg as 20 ms bus blocks in place of the room's mix."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
import wave
from pathlib import Path
from queue import Empty

import av
import numpy as np
import structlog

from gateway.media.audio import BLOCK_SAMPLES

log = structlog.get_logger(__name__)

TEXTS = {"enter_pin": "Please enter the conference PIN, followed by the pound key.",
         "wrong_pin": "That PIN is not valid. Please try again.",
         "goodbye": "Goodbye."}
TONES = {"enter_pin": [440.0], "wrong_pin": [480.0, 620.0], "goodbye": [350.0]}


def make_prompts(folder: Path) -> dict[str, Path]:
    """The prompt files, made once: speech from espeak-ng, else a short tone per prompt."""
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    espeak = shutil.which("espeak-ng")
    for name, text in TEXTS.items():
        path = folder / f"{name}.wav"
        out[name] = path
        if path.exists() and path.stat().st_size > 44:
            continue
        if espeak:
            try:
                subprocess.run([espeak, "-s", "190", "-w", str(path), text], check=True, capture_output=True,
                               timeout=30)
                continue
            except (subprocess.SubprocessError, OSError) as exc:
                log.warning("espeak-ng failed, using tones", error=str(exc))
        _write_tone(path, TONES[name])
    return out


def _write_tone(path: Path, tones: list[float], seconds: float = 0.8, rate: int = 8000) -> None:
    t = np.arange(int(seconds * rate)) / rate
    wave_ = sum(np.sin(2 * np.pi * f * t) for f in tones) / len(tones)
    samples = (wave_ * 0.3 * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())


def load_blocks(path: Path) -> np.ndarray:
    """A file as (n, 960, 2) int16 bus blocks (48 kHz stereo), zero-padded to whole blocks."""
    resampler = av.AudioResampler(format="s16", layout="stereo", rate=48000)
    chunks = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            frame.pts = None
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1, 2))
    for out in resampler.resample(None):
        chunks.append(out.to_ndarray().reshape(-1, 2))
    samples = np.concatenate(chunks) if chunks else np.zeros((BLOCK_SAMPLES, 2), np.int16)
    pad = (-len(samples)) % BLOCK_SAMPLES
    samples = np.concatenate([samples, np.zeros((pad, 2), np.int16)])
    return samples.reshape(-1, BLOCK_SAMPLES, 2)


class PromptPlayer:
    """Stands in for a leg's mix output: hands out the prompt's blocks, then silence."""

    def __init__(self) -> None:
        self._blocks: np.ndarray | None = None
        self._index = 0
        self._silence = np.zeros((BLOCK_SAMPLES, 2), np.int16)
        self.done = threading.Event()
        self.done.set()
        # the media thread reads while the loop starts a prompt: without the lock it could see
        # the cleared event with the old (finished) prompt and end the new one at once
        self._lock = threading.Lock()

        self._start = time.monotonic()
        self._served = 0  # blocks handed out since _start: paced at one per 20 ms like a mixer

    def play(self, blocks: np.ndarray) -> None:
        with self._lock:
            self._blocks, self._index = blocks, 0
            self.done.clear()

    def get_nowait(self) -> tuple[int, np.ndarray]:
        """The next block when one is due (raises queue.Empty otherwise, like a MixOutput):
        the media thread drains outputs after a late tick, which must not fast-forward a prompt."""
        with self._lock:
            if self._served >= int((time.monotonic() - self._start) / 0.02) + 1:
                raise Empty
            self._served += 1
            blocks = self._blocks
            if blocks is None or self._index >= len(blocks):
                self.done.set()
                return 0, self._silence
            block = blocks[self._index]
            self._index += 1
        return 0, block
