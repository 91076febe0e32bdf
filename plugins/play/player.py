"""The player thread: demuxes a source with PyAV and publishes it in real time on the room clock.

Cost: packets of the usual codecs (H.264, AAC, ...) go to the tracks still encoded; a track
decodes only when someone needs pixels or samples, and a passthrough output forwards them
as they are. Other codecs are decoded here and published as frames.

Time: a source's timestamps are shifted onto the room clock. The shift is set when playback
(re)starts — at the start, after a pause, a seek, a switch, a replay or a reconnect — so that
the first packet is due now; output timestamps therefore only grow (a pause shows as a gap,
like a live edge that went quiet), and every packet is pushed when the room clock reaches it.
Video waits for its time exactly; audio is pushed slightly ahead (``audio_lead_s``) so the
mixer's jitter buffer never starves.

Control commands (pause, resume, seek, switch, stop) arrive on a queue that doubles as the
thread's sleep, so they take effect at once, between two packets.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import structlog

from gateway.media.audio import BLOCK_SAMPLES, CHANNELS, samples_to_frame
from gateway.media.bus import FrameBus
from gateway.media.clock import AUDIO_RATE
from gateway.media.track import CodecInfo, Track, TrackKind, TrackSource
from plugins.play.source import PACKET_CODECS, OpenedSource, SourceSpec, SourceUnreachable, describe_error

log = structlog.get_logger(__name__)

Notify = Callable[..., None]  # notify(kind: "status" | "finished", **data), from the player thread
Reopen = Callable[[SourceSpec], OpenedSource]  # open the same source again


@dataclass
class Command:
    action: str  # pause | resume | seek | switch | stop
    position_s: float = 0.0
    source: OpenedSource | None = None


class _Restart(Exception):
    """Raised inside the packet loop: a seek or switch replaced what is being read."""


class _Stop(Exception):
    pass


class SilentAudio(threading.Thread):
    """20 ms blocks of silence on the room clock: the source has no audio, and the room's
    mixer, recordings and pushes still get a steady audio track (3tee auto_publish_mock_audio)."""

    def __init__(self, track: Track, stop: threading.Event) -> None:
        super().__init__(name=f"play-silence-{track.participant_id}", daemon=True)
        self.track, self._stop = track, stop
        self.blocks = 0

    def run(self) -> None:
        clock = self.track.clock
        period = BLOCK_SAMPLES / AUDIO_RATE
        zeros = np.zeros((BLOCK_SAMPLES, CHANNELS), np.int16)
        index = int(clock.now() / period)
        while not self._stop.is_set():
            wait = index * period - clock.now()
            if wait > 0 and self._stop.wait(wait):
                return
            self.track.push_frame(samples_to_frame(zeros, index * BLOCK_SAMPLES))
            self.blocks += 1
            index += 1


def _signature(info: CodecInfo | None) -> tuple[object, ...]:
    if info is None:
        return ()
    return info.name, info.extradata, info.width, info.height, info.sample_rate, info.channels


class Player(threading.Thread):
    def __init__(self, bus: FrameBus, participant_id: str, source: OpenedSource, *, notify: Notify,
                 reopen: Reopen, replay_times: int = 0, start_s: float = 0.0, mock_audio: bool = True,
                 audio_lead_s: float = 0.05, retry_delays_s: tuple[float, ...] = (0.0, 1.0, 3.0),
                 end_delay_s: float = 2.0) -> None:
        super().__init__(name=f"play-{participant_id}", daemon=True)
        self.bus = bus
        self.clock = bus.clock
        self.participant_id = participant_id
        self.source = source
        self.notify = notify
        self.reopen = reopen
        self.replay_times = replay_times
        self.start_s = start_s
        self.mock_audio = mock_audio
        self.audio_lead_s = audio_lead_s
        self.retry_delays_s = tuple(retry_delays_s)
        self.end_delay_s = end_delay_s
        self.commands: queue.Queue[Command] = queue.Queue()
        self.video_track: Track | None = None
        self.audio_track: Track | None = None
        self._video_sig: tuple[object, ...] = ()
        self._audio_sig: tuple[object, ...] = ()
        self._silence: SilentAudio | None = None
        self._silence_stop = threading.Event()
        self._shift: float | None = None  # room seconds minus source seconds; None: set at the next packet
        self._last_due = 0.0
        self._decode_here: set[int] = set()  # stream indexes decoded by the player (not by the track)
        self.paused = False
        self.position_s = 0.0
        self.loop = 0  # 1-based number of the loop playing
        self.video_packets = 0
        self.audio_packets = 0
        self.reconnects = 0
        self.ended_reason: str | None = None

    # ---------------------------------------------------------------- control (any thread)
    def command(self, command: Command) -> None:
        self.commands.put(command)

    def stop(self, timeout: float = 5.0) -> None:
        self.commands.put(Command("stop"))
        if self.is_alive() and self is not threading.current_thread():
            self.join(timeout)

    def close_tracks(self) -> None:
        """Remove the participant's tracks from the bus (after the thread ended)."""
        self._silence_stop.set()
        for track in (self.video_track, self.audio_track):
            if track is not None:
                self.bus.remove_track(track.track_id)
        self.video_track = self.audio_track = None

    def stats(self) -> dict[str, Any]:
        return {"loops": self.loop, "video_packets": self.video_packets, "audio_packets": self.audio_packets,
                "position_s": round(self.position_s, 3), "paused": self.paused, "reconnects": self.reconnects,
                "silence_blocks": self._silence.blocks if self._silence else 0}

    # ---------------------------------------------------------------- tracks
    def _publish_tracks(self, source: OpenedSource) -> None:
        """Create the tracks for `source`, keeping the current ones when the codec is the same
        (a replay, a seek, a switch to a similar file: subscribers are not disturbed)."""
        self._decode_here = {s.index for s in source.streams if s.codec_context.name not in PACKET_CODECS}
        video_info = CodecInfo.from_stream(source.video) if source.video is not None else None
        audio_info = CodecInfo.from_stream(source.audio) if source.audio is not None else None
        self.video_track, self._video_sig = self._replace(
            self.video_track, self._video_sig, video_info, TrackKind.VIDEO, source.video)
        if audio_info is None and self.mock_audio:
            if self._silence is None:
                if self.audio_track is not None:
                    self.bus.remove_track(self.audio_track.track_id)
                self.audio_track = self.bus.create_track(TrackKind.AUDIO, TrackSource.MIC, self.participant_id,
                                                         name="silence")
                self._audio_sig = ("silence",)
                self._silence_stop.clear()
                self._silence = SilentAudio(self.audio_track, self._silence_stop)
                self._silence.start()
            return
        if self._silence is not None:
            self._silence_stop.set()
            self._silence.join(timeout=1)
            self._silence = None
        self.audio_track, self._audio_sig = self._replace(
            self.audio_track, self._audio_sig, audio_info, TrackKind.AUDIO, source.audio)

    def _replace(self, track: Track | None, sig: tuple[object, ...], info: CodecInfo | None, kind: TrackKind,
                 stream: Any) -> tuple[Track | None, tuple[object, ...]]:
        new_sig = _signature(info)
        if track is not None and new_sig == sig:
            return track, sig
        if track is not None:
            self.bus.remove_track(track.track_id)
        if info is None:
            return None, ()
        source = TrackSource.CAMERA if kind is TrackKind.VIDEO else TrackSource.MIC
        codec = None if stream.index in self._decode_here else info
        return self.bus.create_track(kind, source, self.participant_id, codec=codec), new_sig

    # ---------------------------------------------------------------- the thread
    def run(self) -> None:
        error: dict[str, Any] | None = None
        try:
            self._publish_tracks(self.source)
            self._play()
            self.ended_reason = self.ended_reason or "eof"
        except _Stop:
            self.ended_reason = "stopped"
        except SourceUnreachable as exc:
            self.ended_reason, error = "source_failed", describe_error(exc)
        except Exception as exc:
            log.exception("play-in failed", participant_id=self.participant_id)
            self.ended_reason, error = "error", describe_error(exc)
        finally:
            self.source.close()
        if self.ended_reason == "eof":
            try:  # hold the last picture a moment, then report (3tee stop_event_notify_delay_time)
                self._wait_until(self.clock.now() + self.end_delay_s, holding=True)
            except _Stop:
                self.ended_reason = "stopped"
        self.notify("finished", reason=self.ended_reason, error=error, **self.stats())

    def _play(self) -> None:
        self._seek(self.start_s)
        self.loop = 1
        while True:
            try:
                self._play_once()
            except _Restart:
                continue
            if self.replay_times != -1 and self.loop > self.replay_times:
                return
            self.loop += 1
            self._rewind()
            self.notify("status", status="publishing", event="replay", loop=self.loop)

    def _rewind(self) -> None:
        if self.source.seekable:
            self._seek(0.0)
        else:
            self._switch_to(self.reopen(self.source.spec))

    def _play_once(self) -> None:
        source = self.source
        while True:
            try:
                packets = source.container.demux(*source.streams)
                for packet in packets:
                    if packet.size == 0 or (packet.dts is None and packet.pts is None and packet.time_base is None):
                        continue
                    self._push(packet)
                return  # end of file
            except (av.FFmpegError, OSError) as exc:
                if not source.spec.network:
                    raise
                self._reconnect(exc)
                source = self.source

    def _reconnect(self, exc: BaseException) -> None:
        """A network source broke mid-stream: reopen it on the retry schedule, resuming at the
        position reached when the source is seekable."""
        reason = getattr(exc, "strerror", None) or str(exc)
        position = self.position_s
        for attempt, delay in enumerate(self.retry_delays_s, start=1):
            self.notify("status", status="reconnecting", attempt=attempt, delay_s=delay, reason=reason)
            self._wait_until(self.clock.now() + delay, holding=True)
            try:
                source = self.reopen(self.source.spec)
            except SourceUnreachable as error:
                reason = error.message
                continue
            self.reconnects += 1
            self._switch_to(source)
            if source.seekable and position > 0:
                self._seek(position)
            self.notify("status", status="publishing", event="reconnected", attempt=attempt)
            return
        raise SourceUnreachable(f"{self.source.spec.shown} broke and could not be reopened: {reason}")

    # ---------------------------------------------------------------- one packet
    def _push(self, packet: av.Packet) -> None:
        stream = packet.stream
        is_video = stream.type == "video"
        tb = packet.time_base
        src_ticks = packet.dts if packet.dts is not None else packet.pts
        if src_ticks is None or tb is None:
            self._wait_until(self.clock.now())
            self._deliver(packet, is_video)
            return
        src = float(src_ticks * tb)
        if self._shift is None:
            self._shift = max(self.clock.now(), self._last_due + 0.001) - src
        due = src + self._shift
        self._wait_until(due - (0.0 if is_video else self.audio_lead_s))
        if self._shift is None:  # resumed after a pause while waiting: re-anchor this packet
            self._shift = max(self.clock.now(), self._last_due + 0.001) - src
            due = src + self._shift
        shift_ticks = round(self._shift / tb)
        packet.dts = src_ticks + shift_ticks if packet.dts is not None else None
        if packet.pts is not None:
            packet.pts += shift_ticks
        self._last_due = max(self._last_due, due)
        self.position_s = src
        self._deliver(packet, is_video)

    def _deliver(self, packet: av.Packet, is_video: bool) -> None:
        track = self.video_track if is_video else self.audio_track
        if is_video:
            self.video_packets += 1
        else:
            self.audio_packets += 1
        if track is None:
            return
        if packet.stream.index not in self._decode_here:
            track.push_packet(packet)
            return
        try:
            for frame in packet.stream.codec_context.decode(packet):
                track.push_frame(frame)
        except av.FFmpegError as exc:
            track.decode_errors += 1
            log.debug("decode error", error=str(exc))

    # ---------------------------------------------------------------- waiting and commands
    def _wait_until(self, deadline: float, holding: bool = False) -> None:
        """Sleep until `deadline` on the room clock, obeying commands meanwhile. A pause waits
        for resume; a seek or switch raises _Restart (the pending packet is dropped), unless
        `holding` (between loops, at the end), where it is applied and the wait ends."""
        while True:
            timeout = None if self.paused else max(0.0, deadline - self.clock.now())
            try:
                command = self.commands.get(timeout=timeout)
            except queue.Empty:
                return
            if command.action == "stop":
                raise _Stop
            if command.action == "pause":
                self.paused = True
            elif command.action == "resume":
                if self.paused:
                    self.paused = False
                    self._shift = None  # playback continues from here, now
                    return
            elif command.action == "seek":
                self.paused = False
                self._seek(command.position_s)
                self.notify("status", status="publishing", event="seek", position_s=command.position_s)
                if not holding:
                    raise _Restart
                return
            elif command.action == "switch" and command.source is not None:
                self.paused = False
                self._switch_to(command.source)
                self.notify("status", status="publishing", event="switch", url=command.source.spec.shown,
                            media_info=command.source.media_info)
                if not holding:
                    raise _Restart
                return

    def _seek(self, position_s: float) -> None:
        self._shift = None
        self.position_s = position_s
        if position_s <= 0 and self.video_packets == 0 and self.audio_packets == 0:
            return  # nothing read yet
        container = self.source.container
        try:
            container.seek(int(position_s * 1_000_000), backward=True, any_frame=False)
        except av.FFmpegError as exc:
            log.warning("seek failed", position_s=position_s, error=str(exc))
        for stream in self.source.streams:
            if stream.index in self._decode_here:
                stream.codec_context.flush_buffers()

    def _switch_to(self, source: OpenedSource) -> None:
        old, self.source = self.source, source
        if old is not source:
            old.close()
        self._shift = None
        self.position_s = 0.0
        self._publish_tracks(source)
