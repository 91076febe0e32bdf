"""The audio mixer, checked by content: each participant speaks a distinct tone and every output
is judged by its spectrum (or sample by sample where the arithmetic is exact)."""

from __future__ import annotations

import queue
import time
from collections.abc import Iterable

import av
import numpy as np
import pytest

from gateway.media.audio import BLOCK_SAMPLES, samples_to_frame
from gateway.media.bus import FrameBus
from gateway.media.layout.model import AudioSelection
from gateway.media.mixer import SAT, AudioMixer, MixOutput
from gateway.media.track import Track, TrackKind, TrackSource

RATE = 48000
TONES = {"p1": 440, "p2": 660, "p3": 880, "p4": 1100}
PRIME = 3  # blocks queued before ticking: the 60 ms jitter target
WINDOW = 20  # blocks analysed: 400 ms, 2.5 Hz per FFT bin


class Source:
    """A track fed with a continuous sine tone, 20 ms per push, at any rate and layout."""

    def __init__(self, track: Track, freq: float, amp: float = 8000, rate: int = RATE,
                 layout: str = "stereo") -> None:
        self.track, self.freq, self.amp, self.rate, self.layout = track, freq, amp, rate, layout
        self.sent = 0  # samples at self.rate

    def samples(self, start: int, count: int) -> np.ndarray:
        t = (start + np.arange(count)) / self.rate
        return np.rint(self.amp * np.sin(2 * np.pi * self.freq * t)).astype(np.int16)

    def push(self) -> None:
        count = self.rate // 50
        mono = self.samples(self.sent, count)
        self.sent += count
        if self.layout == "stereo" and self.rate == RATE:
            frame = samples_to_frame(np.column_stack([mono, mono]))
        else:
            channels = 2 if self.layout == "stereo" else 1
            frame = av.AudioFrame.from_ndarray(np.repeat(mono, channels).reshape(1, -1), format="s16",
                                               layout=self.layout)
            frame.sample_rate = self.rate
        self.track.push_frame(frame)


class Room:
    def __init__(self, **mixer_kwargs: object) -> None:
        self.bus = FrameBus()
        self.sources: dict[str, Source] = {}
        self.mixer = AudioMixer(self.bus, **mixer_kwargs)  # type: ignore[arg-type]
        self.talking: set[str] = set()

    def publish(self, pid: str, freq: float, *, source: str = TrackSource.MIC, key: str | None = None,
                **kwargs: object) -> Source:
        track = self.bus.create_track(TrackKind.AUDIO, source, pid)
        src = Source(track, freq, **kwargs)  # type: ignore[arg-type]
        self.sources[key or pid] = src
        self.talking.add(key or pid)
        return src

    def run(self, ticks: int, outputs: Iterable[MixOutput] = ()) -> dict[MixOutput, list[tuple[int, np.ndarray]]]:
        """Push one block per talking source and tick, `ticks` times; drain the outputs."""
        got: dict[MixOutput, list[tuple[int, np.ndarray]]] = {out: [] for out in outputs}
        for _ in range(ticks):
            for key in self.talking:
                self.sources[key].push()
            self.mixer.tick()
            for out, blocks in got.items():
                while out.queued:
                    blocks.append(out.get_nowait())
        return got

    def prime(self) -> None:
        for _ in range(PRIME):
            for key in self.talking:
                self.sources[key].push()


def room_of_four() -> Room:
    room = Room()
    for pid in ("p1", "p2", "p3"):
        room.publish(pid, TONES[pid])
    room.publish("p4", TONES["p4"], rate=16000, layout="mono")  # resampled by the track
    room.prime()
    return room


def concat(blocks: list[tuple[int, np.ndarray]], last: int = WINDOW) -> np.ndarray:
    return np.concatenate([samples for _pts, samples in blocks[-last:]])


def peaks(samples: np.ndarray, channel: int = 0) -> dict[float, float]:
    """Spectral magnitude at each test tone (max over ±2 bins), windowed to stop leakage."""
    x = samples[:, channel].astype(np.float64)
    mag = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    bins = len(x) / RATE
    return {f: float(mag[round(f * bins) - 2: round(f * bins) + 3].max()) for f in (*TONES.values(), 1500)}


def assert_tones(samples: np.ndarray, present: Iterable[float], absent: Iterable[float], channel: int = 0) -> None:
    p = peaks(samples, channel)
    present, absent = list(present), list(absent)
    weakest = min(p[f] for f in present)
    assert weakest > 0.3 * max(p[f] for f in present), p  # every expected tone clearly there
    for f in absent:
        assert p[f] < 0.01 * weakest, (f, p)  # at least 40 dB below the weakest wanted tone


def test_mix_minus_leaves_out_own_voice_and_resamples() -> None:
    room = room_of_four()
    listeners = {pid: room.mixer.add_listener(pid, maxsize=100) for pid in TONES}
    got = room.run(40, listeners.values())
    for pid, out in listeners.items():
        others = [f for p, f in TONES.items() if p != pid]
        for channel in (0, 1):
            assert_tones(concat(got[out]), present=others, absent=[TONES[pid]], channel=channel)
        assert out.dropped == 0


def test_pts_is_continuous_on_the_room_clock() -> None:
    room = room_of_four()
    out = room.mixer.add_listener("p1", maxsize=100)
    blocks = room.run(30, [out])[out]
    pts = [p for p, _ in blocks]
    assert pts[0] == room.mixer.start_pts
    assert np.all(np.diff(pts) == BLOCK_SAMPLES)
    assert all(samples.shape == (BLOCK_SAMPLES, 2) and samples.dtype == np.int16 for _, samples in blocks)


def test_composite_selection_and_live_update() -> None:
    room = room_of_four()
    everyone = room.mixer.add_output(None, maxsize=100)
    pair = room.mixer.add_output(AudioSelection(participants=["p1", "p2"]), maxsize=100)
    got = room.run(40, [everyone, pair])
    assert_tones(concat(got[everyone]), present=TONES.values(), absent=[1500])
    assert_tones(concat(got[pair]), present=[440, 660], absent=[880, 1100])

    room.mixer.set_selection(pair, AudioSelection(participants=["p3"]))
    got = room.run(30, [pair])
    assert_tones(concat(got[pair]), present=[880], absent=[440, 660, 1100])

    with pytest.raises(ValueError):
        room.mixer.set_selection(room.mixer.add_listener("p1"), None)


def test_channel_assignment_left_right() -> None:
    room = room_of_four()
    out = room.mixer.add_output(AudioSelection(participants=["p1", "p2", "p3"],
                                               channels={"p1": "left", "p2": "right"}), maxsize=100)
    mix = concat(room.run(40, [out])[out])
    assert_tones(mix, present=[440, 880], absent=[660, 1100], channel=0)
    assert_tones(mix, present=[660, 880], absent=[440, 1100], channel=1)
    # a dual-mono source downmixed to one channel keeps its amplitude
    p = peaks(mix, 0)
    assert 0.8 < p[440] / p[880] < 1.25


def test_full_scale_sources_saturate_without_wrapping() -> None:
    room = Room()
    freqs = [300 + 170 * k for k in range(8)]
    for k, f in enumerate(freqs):
        room.publish(f"s{k}", f, amp=SAT)
    room.prime()
    composite = room.mixer.add_output(None, max_sources=None, maxsize=100)
    listener = room.mixer.add_listener("s0", maxsize=100)
    got = room.run(12, [composite, listener])

    blocks = [samples for _pts, samples in got[composite]]
    first = next(i for i, b in enumerate(blocks) if b.any())  # where the sources started playing
    checked = 0
    for j, block in enumerate(blocks[first:]):
        tones = [room.sources[f"s{k}"].samples(j * BLOCK_SAMPLES, BLOCK_SAMPLES).astype(np.int32)
                 for k in range(8)]
        expected = np.clip(sum(tones), -SAT, SAT)
        assert np.array_equal(block[:, 0], expected) and np.array_equal(block[:, 1], expected)
        minus = got[listener][first + j][1]
        assert np.array_equal(minus[:, 0], np.clip(sum(tones[1:]), -SAT, SAT))
        checked += 1
    assert checked >= 5
    mix = np.concatenate(blocks[first:])
    assert mix.max() == SAT and mix.min() == -SAT


def test_limiter_turns_loud_mix_down_instead_of_clipping() -> None:
    room = Room()
    for k in range(8):
        room.publish(f"s{k}", [440, 660, 880, 1100][k % 4] + (k // 4) * 5, amp=SAT)
    room.prime()
    out = room.mixer.add_output(None, limiter=True, maxsize=100)
    mix = concat(room.run(40, [out])[out])
    assert np.abs(mix.astype(np.int32)).max() < SAT
    assert np.abs(mix.astype(np.int32)).max() > SAT // 2
    assert_tones(mix, present=[440, 660, 880, 1100], absent=[1500])


def test_source_that_stops_is_concealed_with_silence() -> None:
    room = room_of_four()
    out = room.mixer.add_listener("p1", maxsize=200)
    room.run(20, [out])
    room.talking.discard("p2")  # p2's network goes quiet
    blocks = room.run(40, [out])[out]
    assert_tones(concat(blocks), present=[880, 1100], absent=[660])
    assert np.all(np.diff([p for p, _ in blocks]) == BLOCK_SAMPLES)  # the mixer kept ticking

    room.talking.add("p2")  # and it comes back
    blocks = room.run(30, [out])[out]
    assert_tones(concat(blocks), present=[660, 880, 1100], absent=[440])


def test_muted_track_contributes_nothing() -> None:
    room = room_of_four()
    out = room.mixer.add_listener("p1", maxsize=200)
    room.run(10, [out])
    room.sources["p3"].track.muted = True
    blocks = room.run(WINDOW, [out])[out]
    assert_tones(concat(blocks), present=[660, 1100], absent=[880, 440])


def test_removed_track_stops_contributing() -> None:
    room = room_of_four()
    out = room.mixer.add_listener("p1", maxsize=200)
    room.run(10, [out])
    room.bus.remove_track(room.sources["p2"].track.track_id)
    room.talking.discard("p2")
    blocks = room.run(WINDOW, [out])[out]
    assert_tones(concat(blocks), present=[880, 1100], absent=[660, 440])
    assert "p2" not in room.mixer.levels
    assert not room.sources["p2"].track.has_frame_subscribers


def test_track_added_later_and_two_tracks_per_participant_are_summed() -> None:
    room = room_of_four()
    p1 = room.mixer.add_listener("p1", maxsize=200)
    p2 = room.mixer.add_listener("p2", maxsize=200)
    room.run(5, [p1, p2])
    room.publish("p1", 1500, source=TrackSource.SCREEN_AUDIO, key="p1-screen")
    got = room.run(40, [p1, p2])
    assert_tones(concat(got[p2]), present=[440, 880, 1100, 1500], absent=[660])
    assert_tones(concat(got[p1]), present=[660, 880, 1100], absent=[440, 1500])
    assert set(room.mixer.levels) == set(TONES)


def test_silent_and_non_publishing_listeners_share_the_total() -> None:
    room = room_of_four()
    room.talking.discard("p4")  # p4 publishes but delivers nothing
    viewer = room.mixer.add_listener("viewer")
    other_viewer = room.mixer.add_listener("viewer2")
    p4 = room.mixer.add_listener("p4")
    p1 = room.mixer.add_listener("p1")
    everyone = room.mixer.add_output(None)
    room.run(10)
    for _ in range(5):
        a, b, c, d, e = (o.get_nowait()[1] for o in (viewer, other_viewer, p4, p1, everyone))
    assert a is b is c is e  # one array, no copies
    assert d is not a and not a.flags.writeable
    assert_tones(np.concatenate([viewer.get_nowait()[1] for _ in range(5)]), present=[440, 660, 880],
                 absent=[1100])


def test_slow_consumer_never_blocks_and_stays_bounded() -> None:
    room = room_of_four()
    slow = room.mixer.add_listener("p1", maxsize=5)
    fast = room.mixer.add_output(None, maxsize=5)
    blocks = room.run(60, [fast])[fast]
    assert len(blocks) == 60 and np.all(np.diff([p for p, _ in blocks]) == BLOCK_SAMPLES)
    assert slow.queued == 5 and slow.produced == 60 and slow.dropped == 55
    pts, _ = slow.get_nowait()
    assert pts == blocks[-5][0]  # the newest blocks were kept, the oldest dropped
    with pytest.raises(queue.Empty):
        fast.get(timeout=0.01)


def test_frame_helper() -> None:
    room = room_of_four()
    out = room.mixer.add_listener("p2")
    room.run(1)
    frame = out.frame(timeout=1)
    assert isinstance(frame, av.AudioFrame)
    assert (frame.samples, frame.sample_rate, frame.layout.name, frame.pts) == (960, RATE, "stereo",
                                                                               room.mixer.start_pts)


def test_levels_and_active_speaker() -> None:
    speakers: list[str | None] = []
    reports: list[dict[str, float]] = []
    room = Room(on_levels=reports.append, on_active_speaker=speakers.append)
    room.publish("loud", 440, amp=16000)
    room.publish("soft", 660, amp=7000)  # talking too, but within the switch margin
    room.publish("quiet", 880, amp=300)
    room.publish("silent", 1100)
    room.talking.discard("silent")
    room.prime()
    room.run(100)
    levels = room.mixer.levels
    assert levels["loud"] > levels["soft"] > levels["quiet"] > levels["silent"] == -127.0
    assert -10 < levels["loud"] < -3  # a sine at half scale is -9 dBov
    assert room.mixer.active_speaker == "loud"
    assert speakers == ["loud"]  # no flapping with two talkers
    assert 5 <= len(reports) <= 10 and set(reports[-1]) == {"loud", "soft", "quiet", "silent"}

    room.talking.discard("loud")
    room.sources["soft"].amp = 3000  # quieter than "loud" was, but now the loudest
    room.run(60)
    assert speakers == ["loud", "soft"]

    room.talking.clear()
    room.run(150)
    assert speakers == ["loud", "soft", None]
    assert room.mixer.levels["soft"] == -127.0


def test_active_speaker_ignores_short_bursts() -> None:
    speakers: list[str | None] = []
    room = Room(on_active_speaker=speakers.append)
    room.publish("talker", 440, amp=8000)
    room.publish("cougher", 660, amp=30000)
    room.talking.discard("cougher")
    room.prime()
    room.run(40)
    room.talking.add("cougher")
    room.run(4)  # an 80 ms burst
    room.talking.discard("cougher")
    room.run(40)
    assert speakers == ["talker"]


def test_worker_thread_delivers_continuous_pts() -> None:
    room = room_of_four()
    out = room.mixer.add_listener("p1", maxsize=100)
    room.mixer.start()
    try:
        pts = [out.get(timeout=5)[0] for _ in range(10)]
    finally:
        room.mixer.stop()
    steps = np.diff(pts)
    assert np.all(steps > 0) and np.all(steps % BLOCK_SAMPLES == 0)
    if room.mixer.skipped_ticks == 0:  # a badly stalled machine may skip ahead, keeping pts on the clock
        assert np.all(steps == BLOCK_SAMPLES)
    room.mixer.close()
    with pytest.raises(queue.Empty):
        while True:
            out.get(timeout=1)


def test_active_speaker_among_equal_talkers_is_chosen_once() -> None:
    speakers: list[str | None] = []
    room = Room(on_active_speaker=speakers.append)
    for pid in ("p1", "p2", "p3"):
        room.publish(pid, TONES[pid])
    room.prime()
    room.run(100)
    assert len(speakers) == 1 and speakers[0] in {"p1", "p2", "p3"}
    assert room.mixer.active_speaker == speakers[0]


def test_blocks_a_consumer_holds_are_never_overwritten() -> None:
    room = room_of_four()
    out = room.mixer.add_listener("p1", maxsize=3)  # publishing: its rows come from recycled buffers
    held = []
    for _ in range(40):
        room.run(1)
        held.append(out.get_nowait()[1])
    copies = [block.copy() for block in held]
    room.run(60)
    assert all(np.array_equal(a, b) for a, b in zip(held, copies, strict=True))
    with pytest.raises(ValueError):
        held[-1][0, 0] = 1  # shared with other consumers: read-only

    # once nobody holds them, buffers are recycled rather than allocated every tick
    del held
    room.run(20)
    pool = room.mixer._pool
    for _ in range(20):
        room.run(1)
        block = out.get_nowait()[1]
        assert any(block.base is buffer for buffer in pool)


def test_on_demand_mixer_subscribes_and_ticks_only_while_something_mixes() -> None:
    """Nobody hears the room: its audio tracks have no raw subscriber (packets stay undecoded)
    and the worker does not tick; the first output brings both, the last one's going ends them."""
    room = Room(on_demand=True)
    room.publish("p1", TONES["p1"])
    track = room.sources["p1"].track
    room.mixer.start()
    try:
        room.prime()
        assert not track.has_frame_subscribers
        ticks = room.mixer.ticks
        time.sleep(0.3)
        assert room.mixer.ticks == ticks  # idle: no 20 ms ticks
        late = room.publish("p2", TONES["p2"])  # a track added while idle waits too
        assert not late.track.has_frame_subscribers
        out = room.mixer.add_output(maxsize=1000)
        assert track.has_frame_subscribers and late.track.has_frame_subscribers
        blocks = []
        for _ in range(40):
            room.sources["p1"].push()
            late.push()
            blocks.append(out.get(timeout=5))
        pts = [p for p, _ in blocks]
        assert np.all(np.diff(pts) > 0) and pts[0] >= room.mixer.start_pts
        assert_tones(concat(blocks), present=[TONES["p1"], TONES["p2"]], absent=[TONES["p3"]])
        room.mixer.remove_output(out)
        assert not track.has_frame_subscribers and not late.track.has_frame_subscribers
        ticks = room.mixer.ticks
        time.sleep(0.3)
        assert room.mixer.ticks <= ticks + 1  # at most the tick that was running
    finally:
        room.mixer.close()


def test_tick_hook_runs_in_the_worker_right_after_each_mix() -> None:
    import threading

    room = room_of_four()
    out = room.mixer.add_listener("p1", maxsize=100)
    seen: list[tuple[int, str]] = []  # (blocks queued when the hook ran, thread name)
    done = threading.Event()

    def hook() -> None:
        seen.append((out.queued, threading.current_thread().name))
        if len(seen) == 5:
            done.set()

    def broken() -> None:
        raise RuntimeError("a broken hook must not stop the audio")

    remove_broken = out.after_tick(broken)
    remove = out.after_tick(hook)
    assert remove is not None and remove_broken is not None
    room.mixer.start()
    try:
        assert done.wait(5)
        remove()
        remove_broken()
        count = len(seen)
        pts = [out.get(timeout=5)[0] for _ in range(8)]  # the mixer carries on without the hooks
    finally:
        room.mixer.close()
    assert all(name == "audio-mixer" for _, name in seen[:5])
    # the hook runs after the tick queued its block: never before the first one
    assert [queued for queued, _ in seen[:5]] == list(range(1, 6))
    assert len(seen) <= count + 1 and len(pts) == 8
    assert MixOutput("x").after_tick(hook) is None  # no mixer fills it: no hook


@pytest.mark.parametrize("kernel", ["c", "numpy"])  # a small room in C where it is built, else numpy
@pytest.mark.parametrize("talkers", [5, 40])  # both sides of SMALL_MIX: every row, or only the needed ones
def test_mix_minus_is_exact_in_small_and_large_rooms(talkers: int, kernel: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Sample by sample: each listener hears the saturated sum of everyone else, whether it
    publishes, is silent (a row of zeros) or only listens; the listeners with nothing of
    their own to leave out share one array."""
    from gateway.media.mixer import SMALL_MIX

    if kernel == "numpy":
        monkeypatch.setattr("gateway.media.mixer._mixkernel", None)
    assert (talkers <= SMALL_MIX) == (talkers == 5)
    bus = FrameBus()
    tracks = [bus.create_track(TrackKind.AUDIO, TrackSource.MIC, f"p{k}") for k in range(talkers)]
    mixer = AudioMixer(bus)
    outs = {f"p{k}": mixer.add_listener(f"p{k}") for k in range(talkers)}
    outs["viewer"] = mixer.add_listener("viewer")
    rng = np.random.default_rng(7)
    history: list[list[np.ndarray]] = []
    for tick in range(8):
        amp = 30000 if tick % 2 else 600  # loud ticks saturate, quiet ones fit int16
        blocks = [rng.integers(-amp, amp, (BLOCK_SAMPLES, 2), dtype=np.int16) for _ in tracks]
        blocks[1][:] = 0  # a muted browser mic: zeros
        for track, block in zip(tracks, blocks, strict=True):
            track.push_samples(block)
        history.append(blocks)
        if tick >= 2:  # the 60 ms jitter target is met: one block per tick from here on
            mixer.tick()
            played = history[tick - 2]
            total = np.sum(played, axis=0, dtype=np.int32)
            got = {pid: out.get_nowait()[1] for pid, out in outs.items()}
            for pid, samples in got.items():
                own = played[int(pid[1:])] if pid != "viewer" else 0
                assert np.array_equal(samples, np.clip(total - own, -SAT, SAT)), (tick, pid)
                assert not samples.flags.writeable
            if talkers > SMALL_MIX:  # the silent p1 shares the viewer's total
                assert got["p1"] is got["viewer"]
    mixer.close()


def test_the_mixer_kernel_is_built_and_measures_levels_like_numpy(monkeypatch: pytest.MonkeyPatch) -> None:
    """`make test` builds gateway/media/_mixkernel.c; its small-room mix gives the same levels
    and active speaker as the numpy path, and a strided block is read through its strides."""
    from gateway.media import mixer as mixer_module

    assert mixer_module._mixkernel is not None
    results = []
    for kernel in ("c", "numpy"):
        if kernel == "numpy":
            monkeypatch.setattr(mixer_module, "_mixkernel", None)
        room = Room()
        for pid, amp in (("p1", 12000), ("p2", 3000), ("p3", 800)):
            room.publish(pid, TONES[pid], amp=amp)
        room.prime()
        outs = [room.mixer.add_listener(pid) for pid in ("p1", "p2", "p3")]
        got = room.run(40, outs)
        results.append((room.mixer.levels, room.mixer.active_speaker, [concat(got[o]) for o in outs]))
        room.mixer.close()
    (c_levels, c_speaker, c_audio), (np_levels, np_speaker, np_audio) = results
    assert c_speaker == np_speaker == "p1"
    assert c_levels.keys() == np_levels.keys()
    for pid in c_levels:
        assert abs(c_levels[pid] - np_levels[pid]) < 1e-6, (pid, c_levels, np_levels)
    for a, b in zip(c_audio, np_audio, strict=True):
        assert np.array_equal(a, b)

    out = np.empty((3, BLOCK_SAMPLES, 2), np.int16)
    wide = np.arange(BLOCK_SAMPLES * 4, dtype=np.int16).reshape(BLOCK_SAMPLES, 4)
    strided, dense = wide[:, 1:3], np.ascontiguousarray(wide[:, 1:3])
    other = np.full((BLOCK_SAMPLES, 2), 7, np.int16)
    power = np.empty(2)
    from gateway.media import _mixkernel

    _mixkernel.mix_minus([strided, other], out, power, 15)
    assert np.array_equal(out[0], other) and np.array_equal(out[1], dense) and np.array_equal(out[2], dense + 7)
    assert power[1] == 49.0
    with pytest.raises(ValueError):
        _mixkernel.mix_minus([other, other], out[:2], None, 15)  # no room for the total
    with pytest.raises(ValueError):
        _mixkernel.mix_minus([other[:100]], out, None, 15)  # not a 20 ms block
