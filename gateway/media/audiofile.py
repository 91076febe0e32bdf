"""Audio encoders for recording files: the mixer's 20 ms blocks (48 kHz s16 stereo, room
clock) to AAC (m4a), Opus (ogg), MP3 or 16-bit PCM (wav) packets.

They reuse :class:`AudioEncoder`'s re-chunking and gap filling; only the codec differs. The
packets carry room-clock timestamps in 1/rate, so a recorder can cut them into parts on the
same timeline as the video.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Literal

import av

from gateway.media.clock import AUDIO_RATE
from gateway.media.encoder import _GLOBAL_HEADER, AudioEncoder, Encoding
from gateway.media.track import CodecInfo

FileAudioCodec = Literal["aac", "opus", "mp3", "pcm"]
# recording format -> the audio codec it holds
FORMAT_AUDIO_CODEC: dict[str, FileAudioCodec] = {"mp4": "aac", "hls": "aac", "m4a": "aac", "ogg": "opus",
                                                 "mp3": "mp3", "wav": "pcm"}
_FFMPEG = {"aac": "aac", "opus": "libopus", "mp3": "libmp3lame", "pcm": "pcm_s16le"}
_NAMES = {"aac": "aac", "opus": "opus", "mp3": "mp3", "pcm": "pcm_s16le"}


class FileAudioEncoder(AudioEncoder):
    """An :class:`AudioEncoder` for any codec of :data:`FileAudioCodec` (48 kHz stereo)."""

    def __init__(self, codec: FileAudioCodec, kbps: int = 128, channels: int = 2) -> None:
        encoding = Encoding(audio_kbps=kbps, channels=channels)  # type: ignore[arg-type]
        self.encoding = encoding
        self.file_codec = codec
        ctx = av.CodecContext.create(_FFMPEG[codec], "w")
        formats = [f.name for f in ctx.codec.audio_formats or ()]
        fmt = "s16" if "s16" in formats else formats[0]
        layout = "stereo" if channels == 2 else "mono"
        ctx.sample_rate = AUDIO_RATE
        ctx.layout = layout
        ctx.format = fmt
        if codec != "pcm":
            ctx.bit_rate = kbps * 1000
        ctx.time_base = Fraction(1, AUDIO_RATE)
        ctx.options = {"flags": _GLOBAL_HEADER}
        ctx.open()
        self._ctx = ctx
        self.frame_size = ctx.frame_size or 960  # PCM has no frame size: 20 ms packets
        self.rate = AUDIO_RATE
        same = fmt == "s16" and layout == "stereo"
        self._resampler = None if same else av.AudioResampler(format=fmt, layout=layout, rate=self.rate)
        self._fifo = av.AudioFifo()
        self._head = None
        self._expected_in = None
        self.blocks_in = 0
        self.gaps_filled = 0
        self.reanchors = 0
        self.bytes_out = 0

    @property
    def codec_info(self) -> CodecInfo:
        ctx = self._ctx
        return CodecInfo(name=_NAMES[self.file_codec], time_base=Fraction(1, self.rate), sample_rate=self.rate,
                         channels=self.encoding.channels, extradata=ctx.extradata, bit_rate=ctx.bit_rate or None)
