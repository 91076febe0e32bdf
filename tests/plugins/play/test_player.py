"""The player on a bare frame bus: a network source that breaks mid-stream is reopened on the
retry schedule (with events) and resumes where it was; one that stays down fails with the
reason; packets are paced on the room clock with timestamps that only grow."""

from __future__ import annotations

import dataclasses
import itertools
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from gateway.media.bus import FrameBus
from plugins.play.player import Player
from plugins.play.source import OpenedSource, SourceSpec, SourceUnreachable, local_spec, open_source

FPS = 30


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("player") / "clip.mp4"
    subprocess.run(["ffmpeg", "-hide_banner", "-v", "error", "-y", "-f", "lavfi", "-i",
                    f"color=c=red:s=160x120:r={FPS}:d=1.5", "-c:v", "libx264", "-preset", "ultrafast",
                    "-g", "15", "-pix_fmt", "yuv420p", str(path)], check=True)
    return path


class BreakingContainer:
    """Wraps a real container; its demux raises OSError after `after` packets (a dropped connection)."""

    def __init__(self, container: Any, after: int) -> None:
        self._container, self._after = container, after

    def demux(self, *streams: Any) -> Any:
        for count, packet in enumerate(self._container.demux(*streams)):
            if count == self._after:
                raise OSError(104, "Connection reset by peer")
            yield packet

    def __getattr__(self, name: str) -> Any:
        return getattr(self._container, name)


def network_source(path: Path, break_after: int | None) -> OpenedSource:
    opened = open_source(local_spec(str(path), [path.parent]))
    opened.spec = dataclasses.replace(opened.spec, network=True)  # behave like a URL source
    if break_after is not None:
        opened.container = BreakingContainer(opened.container, break_after)
    return opened


def run_player(source: OpenedSource, reopen: Any, **options: Any) -> tuple[Player, list[tuple[str, dict]]]:
    bus = FrameBus()
    notes: list[tuple[str, dict]] = []
    done = threading.Event()

    def notify(what: str, **data: Any) -> None:
        notes.append((what, data))
        if what == "finished":
            done.set()

    player = Player(bus, "PA_test", source, notify=notify, reopen=reopen, end_delay_s=0.0,
                    retry_delays_s=(0.0, 0.05, 0.1), mock_audio=False, **options)
    track_dts: list[int] = []
    player.start()
    # follow the packets the video track publishes
    while player.video_track is None and player.is_alive():
        done.wait(0.01)
    sub = player.video_track.subscribe_packets() if player.video_track else None
    assert done.wait(30), notes
    player.join(5)
    if sub is not None:
        while not sub.queue.empty():
            packet = sub.queue.get_nowait()
            if packet is not None:
                track_dts.append(packet.dts)
    player.close_tracks()
    assert bus.tracks() == []
    player.track_dts = track_dts  # type: ignore[attr-defined]
    return player, notes


def test_a_broken_stream_reconnects_and_resumes(clip: Path) -> None:
    opens: list[int] = []

    def reopen(spec: SourceSpec) -> OpenedSource:
        opens.append(1)
        if len(opens) == 1:
            raise SourceUnreachable("connection refused")  # the first retry finds it still down
        return network_source(clip, None)

    player, notes = run_player(network_source(clip, break_after=20), reopen)
    statuses = [data for what, data in notes if what == "status"]
    assert [(s["status"], s.get("attempt")) for s in statuses] == [
        ("reconnecting", 1), ("reconnecting", 2), ("publishing", 2)], statuses
    assert "reset" in statuses[0]["reason"].lower() and statuses[1]["reason"] == "connection refused"
    finished = notes[-1][1]
    assert finished["reason"] == "eof" and finished["reconnects"] == 1 and finished["error"] is None
    # resumed at the position reached (a seek lands on the keyframe before it): not from the start
    assert 45 - 20 <= player.video_packets - 20 <= 45, player.video_packets
    dts = player.track_dts  # type: ignore[attr-defined]
    assert dts == sorted(dts) and len(set(dts)) == len(dts)  # only growing, across the reconnect


def test_a_source_that_stays_down_fails_with_the_reason(clip: Path) -> None:
    def reopen(spec: SourceSpec) -> OpenedSource:
        raise SourceUnreachable("connection refused")

    _player, notes = run_player(network_source(clip, break_after=10), reopen)
    attempts = [data["attempt"] for what, data in notes if what == "status"]
    assert attempts == [1, 2, 3]
    finished = notes[-1][1]
    assert finished["reason"] == "source_failed" and finished["error"]["code"] == "source_unreachable"
    assert "connection refused" in finished["error"]["message"]


def test_replays_keep_timestamps_growing(clip: Path) -> None:
    opened = open_source(local_spec(str(clip), [clip.parent]))
    player, notes = run_player(opened, lambda spec: None, replay_times=1)
    assert player.video_packets == 2 * 45 and player.loop == 2
    assert [d["loop"] for what, d in notes if what == "status"] == [2]
    dts = player.track_dts  # type: ignore[attr-defined]
    assert len(dts) >= 88 and all(b > a for a, b in itertools.pairwise(dts))  # subscribed just after start
    assert player.video_track is None  # tracks removed at the end
