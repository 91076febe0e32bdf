"""Packet sources a recording reads, each tagging its packets with a stream key: ``video``
or the audio codec (``aac``, ``opus``, ``mp3``, ``pcm``). Every timestamp is on the room clock,
so one recorder can interleave them and cut every format at the same instants.

- :class:`TrackPackets`: an encoded track — a composite's shared encoder output, or a
  participant's own H.264 (recorded without re-encoding; its source timestamps are mapped
  onto the room clock).
- :class:`MixPackets`: the audio mixer's 20 ms blocks for one selection, encoded to each
  codec the formats want (on the recorder's thread).
"""

from __future__ import annotations

import queue
from fractions import Fraction
from typing import TYPE_CHECKING

import av

from gateway.media.audiofile import FileAudioEncoder

if TYPE_CHECKING:
    from gateway.media.clock import RoomClock
    from gateway.media.mixer import AudioMixer, MixOutput
    from gateway.media.track import CodecInfo, PacketSubscription, Track

Tagged = tuple[str, av.Packet]


class TrackPackets:
    def __init__(self, key: str, track: Track, sub: PacketSubscription, rebase: RoomClock | None = None) -> None:
        self.key = key
        self.track = track
        self.sub = sub
        self.rebase = rebase
        self._offset: Fraction | None = None  # room seconds minus source seconds
        self.infos: dict[str, CodecInfo] = {key: track.codec} if track.codec else {}

    def poll(self) -> list[Tagged] | None:
        out: list[Tagged] = []
        while True:
            try:
                packet = self.sub.get(timeout=0)
            except queue.Empty:
                return out
            if packet is None:
                return out or None
            if packet.pts is None or packet.time_base is None:
                continue
            if self.rebase is not None:
                packet = self._to_room_clock(packet)
            out.append((self.key, packet))

    def _to_room_clock(self, packet: av.Packet) -> av.Packet:
        tb = packet.time_base
        src = packet.pts * tb
        now = Fraction(self.rebase.now()).limit_denominator(1_000_000)  # type: ignore[union-attr]
        if self._offset is None or abs(src + self._offset - now) > 1:
            self._offset = now - src  # first packet, or the source's clock jumped
        shift = round(self._offset / tb)
        copy = av.Packet(packet)  # the original is shared with the track's other subscribers
        copy.pts = packet.pts + shift
        copy.dts = (packet.dts if packet.dts is not None else packet.pts) + shift
        copy.time_base = tb
        copy.duration = packet.duration or 0
        copy.is_keyframe = packet.is_keyframe
        return copy

    def finish(self) -> list[Tagged]:
        return self.poll() or []

    def close(self) -> None:
        self.track.unsubscribe(self.sub)


class MixPackets:
    def __init__(self, mixer: AudioMixer, mix: MixOutput, codecs: list[str], kbps: int = 128) -> None:
        self.mixer = mixer
        self.mix = mix
        self.encoders = {codec: FileAudioEncoder(codec, kbps) for codec in codecs}  # type: ignore[arg-type]
        self.infos: dict[str, CodecInfo] = {k: e.codec_info for k, e in self.encoders.items()}

    def poll(self) -> list[Tagged] | None:
        out: list[Tagged] = []
        while True:
            try:
                pts, samples = self.mix.get_nowait()
            except queue.Empty:
                return out
            for key, encoder in self.encoders.items():
                out += [(key, p) for p in encoder.encode(samples, pts)]

    def finish(self) -> list[Tagged]:
        out = self.poll() or []
        for key, encoder in self.encoders.items():
            out += [(key, p) for p in encoder.flush()]
        return out

    def close(self) -> None:
        self.mixer.remove_output(self.mix)
