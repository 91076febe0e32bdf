"""The legs' batched resamplers: stereo 8 kHz <-> 48 kHz filters against the mono reference,
and a tone that survives the round trip at its frequency; the engine's filter bank (slots in
any order, each with its own memory); the engine's epoll receive path."""

from __future__ import annotations

import asyncio
import socket
import time

import numpy as np
import pytest

from plugins.sip import g711, rtp
from plugins.sip.codecs import (
    CHUNK,
    DOWN_HISTORY,
    DOWN_HISTORY_STEREO,
    UP_HISTORY,
    G711Bank,
    NativeG711Bank,
    downsample_batch,
    downsample_stereo_8k,
    new_bank,
    to_mono,
    upsample_8k_batch,
    upsample_8k_stereo,
)
from plugins.sip.legs import LegEngine, MediaLeg
from plugins.sip.sdp import Codec

LEGS = 2 * CHUNK + 3  # more than one chunk, and a partial last one
# the C bank the engine uses and the numpy one it falls back to: both against the reference
BANKS = pytest.mark.parametrize("BANK", [NativeG711Bank, G711Bank], ids=["native", "numpy"])


def _tones(n: int, blocks: int, rate: int) -> np.ndarray:
    t = np.arange(blocks * rate // 50) / rate
    return np.stack([np.sin(2 * np.pi * (200 + 40 * i) * t) * 8000 for i in range(n)]).astype(np.int16)


def test_upsample_stereo_matches_mono_reference_on_both_channels() -> None:
    pcm = _tones(LEGS, 3, 8000)
    h_ref = np.zeros((LEGS, UP_HISTORY), np.float32)
    h_new = np.zeros((LEGS, UP_HISTORY), np.float32)
    for block in range(3):
        part = pcm[:, block * 160:(block + 1) * 160]
        ref = upsample_8k_batch(part, h_ref)
        out = upsample_8k_stereo(part, h_new)
        assert len(out) == LEGS and out[0].shape == (960, 2) and out[0].dtype == np.int16
        for i in range(LEGS):
            assert np.abs(out[i][:, 0].astype(int) - ref[i]).max() <= 1
            assert np.array_equal(out[i][:, 0], out[i][:, 1])
    np.testing.assert_allclose(h_new, h_ref)


def test_downsample_stereo_matches_mono_reference() -> None:
    rng = np.random.default_rng(1)
    h_ref = np.zeros((LEGS, DOWN_HISTORY), np.float32)
    h_new = np.zeros((LEGS, DOWN_HISTORY_STEREO), np.float32)
    for _ in range(3):
        blocks = [rng.integers(-9000, 9000, (960, 2)).astype(np.int16) for _ in range(LEGS)]
        ref = downsample_batch(to_mono(np.stack(blocks)), h_ref, 8000)
        out = downsample_stereo_8k(blocks, h_new)
        assert out.shape == (LEGS, 160) and out.dtype == np.int16
        assert np.abs(out.astype(int) - ref).max() <= 1


def test_round_trip_keeps_each_legs_tone() -> None:
    pcm = _tones(LEGS, 10, 8000)
    h_up = np.zeros((LEGS, UP_HISTORY), np.float32)
    h_down = np.zeros((LEGS, DOWN_HISTORY_STEREO), np.float32)
    back = []
    for block in range(10):
        up = upsample_8k_stereo(pcm[:, block * 160:(block + 1) * 160], h_up)
        back.append(downsample_stereo_8k(up, h_down))
    signal = np.concatenate(back, axis=1)[:, 320:].astype(np.float64)  # past the filters' start
    freqs = np.fft.rfftfreq(signal.shape[1], 1 / 8000)
    for i in range(LEGS):
        peak = freqs[np.abs(np.fft.rfft(signal[i])).argmax()]
        assert abs(peak - (200 + 40 * i)) < 10
        assert signal[i].std() > 8000 / np.sqrt(2) * 0.7  # pass band (<= 1.6 kHz): the level is kept


@BANKS
def test_bank_matches_reference_filters_per_slot(BANK: type) -> None:
    """The bank's filters give the reference results for legs served in any order and
    subset, each slot keeping its own memory across ticks (full-scale input: clipping)."""
    rng = np.random.default_rng(2)
    bank = BANK(capacity=4)  # grows past it
    slots = np.array([bank.allocate() for _ in range(LEGS)])
    assert len(set(slots.tolist())) == LEGS
    h_up = np.zeros((LEGS, UP_HISTORY), np.float32)
    h_down = np.zeros((LEGS, DOWN_HISTORY_STEREO), np.float32)
    pcm = _tones(LEGS, 6, 8000)
    pcm[3] = rng.integers(-32768, 32767, pcm.shape[1])  # overshoots: must saturate, not wrap
    for block in range(6):
        # each tick a different subset in a different order, like legs whose packets arrived
        served = rng.permutation(LEGS)[: LEGS - block]
        part = pcm[served, block * 160:(block + 1) * 160]
        h_ref = h_up[served]  # a copy: the reference updates it, the bank its own rows
        ref = upsample_8k_stereo(part, h_ref)
        out = bank.upsample(slots[served], part)
        assert out.shape == (len(served), 960, 2) and out.dtype == np.int16
        for row in range(len(served)):
            assert np.abs(out[row].astype(int) - ref[row]).max() <= 1
        h_up[served] = h_ref
        blocks = [rng.integers(-9000, 9000, (960, 2)).astype(np.int16) for _ in served]
        h_sub = h_down[served]
        ref_down = downsample_stereo_8k(blocks, h_sub)
        h_down[served] = h_sub
        low = bank.downsample(slots[served], blocks)
        assert low.shape == (len(served), 160) and np.abs(low.astype(int) - ref_down).max() <= 1
    np.testing.assert_allclose(bank.up[slots], h_up, atol=1e-3)
    np.testing.assert_allclose(bank.down[slots], h_down, atol=1e-3)


@BANKS
def test_bank_round_trip_keeps_each_legs_tone_and_a_reused_slot_starts_silent(BANK: type) -> None:
    bank = BANK()
    slots = np.array([bank.allocate() for _ in range(LEGS)])
    pcm = _tones(LEGS, 10, 8000)
    back = []
    for block in range(10):
        up = bank.upsample(slots, pcm[:, block * 160:(block + 1) * 160])
        assert np.array_equal(up[:, :, 0], up[:, :, 1])
        back.append(bank.downsample(slots, list(up)))
    signal = np.concatenate(back, axis=1)[:, 320:].astype(np.float64)
    freqs = np.fft.rfftfreq(signal.shape[1], 1 / 8000)
    for i in range(LEGS):
        spectrum = np.abs(np.fft.rfft(signal[i]))
        assert abs(freqs[spectrum.argmax()] - (200 + 40 * i)) < 10
        assert signal[i].std() > 8000 / np.sqrt(2) * 0.7
    bank.release(int(slots[5]))
    again = bank.allocate()
    assert again == slots[5]
    # a new leg in a reused slot hears nothing of the old leg's tail
    silent = bank.upsample(np.array([again]), np.zeros((1, 160), np.int16))
    assert not silent.any()


class _Track:
    def __init__(self) -> None:
        self.blocks: list[np.ndarray] = []

    def push_samples(self, samples: np.ndarray) -> None:
        self.blocks.append(samples)


def test_engine_receives_through_epoll_and_latches() -> None:
    """Ready sockets only: two legs, one silent; packets reordered within a tick are sorted,
    a duplicate dropped, and the leg latches to the packets' real source (symmetric RTP)."""
    loop = asyncio.new_event_loop()
    engine = LegEngine(loop)
    socks, peers, legs = [], [], []
    try:
        for _ in range(2):
            pair = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
            for s in pair:
                s.bind(("127.0.0.1", 0))
                s.setblocking(False)
            socks += pair
            peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            peer.bind(("127.0.0.1", 0))
            peers.append(peer)
            leg = MediaLeg(pair[0], pair[1], Codec("PCMU", 0, 8000, 8000), 101, ("127.0.0.1", 9), rtp_timeout=0)
            leg.track = _Track()
            legs.append(leg)
        engine._thread = object()  # type: ignore[assignment]  # no worker: tick by hand
        for leg in legs:
            engine.add(leg)
        tone = g711.encode(_tones(1, 1, 8000)[0], "PCMU").tobytes()
        target = legs[0].rtp_sock.getsockname()
        for seq in (11, 10, 11, 12):
            peers[0].sendto(rtp.build(0, seq, seq * 160, 7, tone), target)
        peers[0].sendto(b"\x81\xc9" + b"\0" * 30, legs[0].rtcp_sock.getsockname())  # an RTCP report
        time.sleep(0.05)
        engine.tick()
        assert legs[0].packets_in == 4 and legs[0].lost == 0 and legs[0]._last_seq == 12
        assert len(legs[0].track.blocks) == 3 and legs[0].track.blocks[0].shape == (960, 2)
        assert legs[0].remote == peers[0].getsockname() and legs[0].latched
        assert legs[1].packets_in == 0 and not legs[1].track.blocks and not legs[1].latched
        engine.remove(legs[1])
        assert legs[1].closed and len(engine._fds) == 2
    finally:
        engine._thread = None
        engine.stop()
        for s in peers:
            s.close()
        loop.close()


def _dominant(blocks: list[np.ndarray]) -> tuple[float, float, float]:
    """The strongest frequency, the share of the power within 30 Hz of it (a clean tone: near
    1; packets out of order or missing: clicks spread it) and the RMS of a leg's published
    48 kHz audio (left channel), past the filters' start."""
    signal = np.concatenate(blocks)[960:, 0].astype(np.float64)
    freqs = np.fft.rfftfreq(len(signal), 1 / 48000)
    power = np.abs(np.fft.rfft(signal * np.hanning(len(signal)))) ** 2
    peak = float(freqs[power.argmax()])
    return peak, float(power[np.abs(freqs - peak) <= 30].sum() / power.sum()), float(signal.std())


def test_engine_decodes_mixed_laws_packet_sizes_and_gains_in_order() -> None:
    """One tick with several packets per leg (decoded in rounds, in sequence order), µ-law
    and A-law legs in one batch, a 10 ms leg on the odd-size path and a gain: each leg's track
    gets its own tone, continuous and at its level."""
    loop = asyncio.new_event_loop()
    engine = LegEngine(loop)
    peers, legs = [], []
    setups = [("PCMU", 0, 400.0, 160, 1.0), ("PCMA", 8, 1000.0, 160, 0.5), ("PCMU", 0, 600.0, 80, 1.0)]
    try:
        for name, pt, _freq, _size, gain in setups:
            pair = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(2)]
            for s in pair:
                s.bind(("127.0.0.1", 0))
                s.setblocking(False)
            peer = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            peer.bind(("127.0.0.1", 0))
            peers.append(peer)
            leg = MediaLeg(pair[0], pair[1], Codec(name, pt, 8000, 8000), 101, None, rtp_timeout=0)
            leg.track, leg.gain = _Track(), gain
            legs.append(leg)
        engine._thread = object()  # type: ignore[assignment]  # no worker: tick by hand
        for leg in legs:
            engine.add(leg)
        t = np.arange(4800) / 8000  # 600 ms of each tone
        streams = [g711.encode((np.sin(2 * np.pi * freq * t) * 8000).astype(np.int16), name).tobytes()
                   for name, _pt, freq, _size, _gain in setups]
        sent = [0, 0, 0]
        for _tick in range(10):
            for i, (leg, peer, (_name, pt, _freq, size, _gain)) in enumerate(zip(legs, peers, setups, strict=True)):
                count = 3 * 160 // size  # 60 ms a tick (6 packets of 10 ms: the most a tick takes)
                # sent in reverse order within the tick: the engine sorts them
                for seq in reversed(range(sent[i], sent[i] + count)):
                    peer.sendto(rtp.build(pt, seq, seq * size, 9, streams[i][seq * size:(seq + 1) * size]),
                                leg.rtp_sock.getsockname())
                sent[i] += count
            time.sleep(0.02)
            engine.tick()
        levels = []
        for leg, stream, (name, _pt, freq, size, gain) in zip(legs, streams, setups, strict=True):
            assert leg.lost == 0 and leg.skipped == 0 and leg.packets_in == 30 * 160 // size
            published = np.concatenate(leg.track.blocks)
            assert published.shape == (28800, 2)  # 600 ms, every packet once
            # exactly the whole stream filtered in one go: each packet continued its leg's filter
            pcm = g711.decode(stream, name)
            if gain != 1.0:
                pcm = np.clip(pcm * np.float32(gain), -32767, 32767).astype(np.int16)
            reference = upsample_8k_stereo(pcm[None], np.zeros((1, UP_HISTORY), np.float32))[0]
            assert np.abs(published.astype(int) - reference).max() <= 1
            peak, purity, level = _dominant(leg.track.blocks)
            assert abs(peak - freq) < 5 and purity > 0.99
            levels.append(level)
        assert abs(levels[1] / levels[0] - 0.5) < 0.05  # the A-law leg at half gain
        assert abs(levels[2] / levels[0] - 1) < 0.05
    finally:
        engine._thread = None
        engine.stop()
        for s in peers:
            s.close()
        loop.close()


@BANKS
def test_bank_encode_matches_downsample_then_encode(BANK: type) -> None:
    """The fused filter + G.711 encode gives the codes of the reference filter's samples
    (within one quantisation step: it floors where the reference truncates), saturating."""
    rng = np.random.default_rng(3)
    for law in ("PCMU", "PCMA"):
        bank, h_ref = BANK(), np.zeros((LEGS, DOWN_HISTORY_STEREO), np.float32)
        slots = [bank.allocate() for _ in range(LEGS)]
        for tick in range(3):
            amp = 32767 if tick == 2 else 9000  # full scale: the filter overshoots, must saturate
            blocks = [rng.integers(-amp, amp, (960, 2)).astype(np.int16) for _ in range(LEGS)]
            ref = g711.decode(g711.encode(downsample_stereo_8k(blocks, h_ref), law), law).astype(int)
            payload = bank.encode(slots, blocks, law)
            assert len(payload) == LEGS * 160
            got = g711.decode(payload, law).astype(int).reshape(LEGS, 160)
            step = np.maximum(16, np.abs(ref) // 8)  # a G.711 segment's step is ~1/16 of its level
            assert np.all(np.abs(got - ref) <= step), law


def test_the_engine_uses_the_c_bank() -> None:
    """`make test` builds plugins/sip/_filterbank.c: the engine's bank is the C one."""
    assert isinstance(new_bank(), NativeG711Bank)


def test_c_bank_refuses_bad_arguments_instead_of_reading_past_them() -> None:
    bank = NativeG711Bank(capacity=2)
    slot = bank.allocate()
    with pytest.raises(IndexError):
        bank.upsample([slot + 5], np.zeros((1, 160), np.int16))
    with pytest.raises(ValueError):
        bank.upsample([slot, slot], np.zeros((1, 160), np.int16))  # fewer rows than slots
    with pytest.raises(ValueError):
        bank.downsample([slot], [np.zeros((480, 2), np.int16)])  # not a 20 ms block
    with pytest.raises(ValueError):  # codes must be bytes: int16 "codes" are refused, not wrapped
        bank.upsample([slot], np.full((1, 160), 300, np.int16), g711.DECODE_FLOAT["PCMU"])
    with pytest.raises(ValueError):
        bank.encode([slot], [np.zeros((960, 2), np.float32)], "PCMU")  # not int16
    with pytest.raises(ValueError):  # a bad block after good ones: no memory changed
        before = bank.down.copy()
        bank.encode([slot, slot], [np.full((960, 2), 9000, np.int16), np.zeros((960, 3), np.int16)], "PCMU")
    assert np.array_equal(bank.down, before)
    # a strided block (not one of the mixer's) is read through its strides
    wide = np.arange(960 * 4, dtype=np.int16).reshape(960, 4)
    twin = NativeG711Bank(capacity=2)
    twin.allocate()
    assert bank.encode([slot], [wide[:, 1:3]], "PCMA") == twin.encode([slot], [wide[:, 1:3].copy()], "PCMA")
    # odd sizes the engine's odd-packet path could hand it: any length up to 240 ms
    assert bank.upsample([slot], np.zeros((1, 80), np.int16)).shape == (1, 480, 2)


def test_c_g711_encoders_are_the_tables() -> None:
    """The C bank computes G.711 instead of looking it up: the same code for every sample."""
    from plugins.sip import _filterbank

    every = np.arange(-32768, 32768, dtype=np.int16)
    for law, alaw in (("PCMU", False), ("PCMA", True)):
        assert _filterbank.g711_encode(every, alaw) == g711.encode(every, law).tobytes(), law
