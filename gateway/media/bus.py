"""A room's frame bus: the set of live tracks, and who wants to hear about changes.

The mixer and compositors watch the bus: when a track is published or removed they
re-resolve their sources. Listeners run on the publisher's thread and must be quick.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from gateway.media.clock import RoomClock
from gateway.media.track import Track, TrackKind, TrackSource

Listener = Callable[[str, Track], None]  # ("added" | "removed", track)


class FrameBus:
    def __init__(self, clock: RoomClock | None = None) -> None:
        self.clock = clock or RoomClock()
        self._tracks: dict[str, Track] = {}
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def add_track(self, track: Track) -> Track:
        with self._lock:
            self._tracks[track.track_id] = track
            listeners = list(self._listeners)
        for listener in listeners:
            listener("added", track)
        return track

    def create_track(self, kind: TrackKind | str, source: TrackSource | str, participant_id: str,
                     **kwargs: object) -> Track:
        return self.add_track(Track(kind, source, participant_id, self.clock, **kwargs))  # type: ignore[arg-type]

    def remove_track(self, track_id: str) -> Track | None:
        with self._lock:
            track = self._tracks.pop(track_id, None)
            listeners = list(self._listeners)
        if track is not None:
            track.close()
            for listener in listeners:
                listener("removed", track)
        return track

    def tracks(self, participant_id: str | None = None, kind: TrackKind | None = None) -> list[Track]:
        with self._lock:
            found = list(self._tracks.values())
        return [t for t in found
                if (participant_id is None or t.participant_id == participant_id)
                and (kind is None or t.kind is kind)]

    def get(self, track_id: str) -> Track | None:
        return self._tracks.get(track_id)

    def find(self, participant_id: str, kind: TrackKind, source: TrackSource | None = None) -> Track | None:
        """The participant's track of that kind, preferring `source` when given."""
        candidates = self.tracks(participant_id, kind)
        if source is not None:
            exact = [t for t in candidates if t.source is source]
            if exact:
                return exact[0]
            if source is TrackSource.SCREEN:
                return None
        non_screen = [t for t in candidates if t.source not in (TrackSource.SCREEN, TrackSource.SCREEN_AUDIO)]
        return (non_screen or candidates or [None])[0]

    def listen(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)

        def unlisten() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
        return unlisten

    def close(self) -> None:
        for track in self.tracks():
            self.remove_track(track.track_id)
