"""VP8 frames out of RTP packets, in decoding order, as soon as they are complete.

A frame is the packets from one that starts it (payload descriptor S=1, partition 0) up to
the one with the marker bit (or up to the next frame's start, for a sender that sets no
marker), all with the same timestamp and consecutive sequence numbers. Frames are handed out
in order: a complete frame waits while an earlier one still misses a packet (a NACK asks for
it; its retransmission fills the hole), except that a complete keyframe jumps the queue —
nothing before it is needed any more.

aiortc's jitter buffer hands out a frame only when a packet of the next frame arrives (one
frame interval late) and walks its pending packets per packet; here the common packet costs
one slot store, and the frame is walked once, when its last packet arrives.

When the decoder cannot go on — the hole is not filled while ``MAX_HELD_FRAMES`` newer frames
complete, or a packet comes more than ``CAPACITY`` sequence numbers ahead — the assembler
waits for a keyframe and says a picture was lost (the receiver sends a PLI, RFC 4585
§6.3.1). While waiting it says so again every ``PLI_EVERY`` frames that are not keyframes.
"""

from __future__ import annotations

from typing import NamedTuple

CAPACITY = 512  # sequence numbers kept (a power of two); aiortc's video jitter buffer holds as many
MASK = CAPACITY - 1
MAX_HELD_FRAMES = 15  # complete frames (0.5 s at 30 fps) waiting behind a hole before giving up on it
PLI_EVERY = 30  # non-keyframes between PLIs while waiting for a keyframe


class Frame(NamedTuple):
    timestamp: int
    data: bytes
    keyframe: bool


# a slot: (sequence number, timestamp, starts a frame, marker, VP8 data)
Slot = tuple[int, int, bool, bool, bytes]


def _is_keyframe(data: bytes) -> bool:
    return bool(data) and not data[0] & 0x01  # RFC 6386 §9.1: P bit 0 = key frame


class Vp8Frames:
    def __init__(self) -> None:
        self.slots: list[Slot | None] = [None] * CAPACITY
        self.next_seq: int | None = None  # where the next frame to hand out starts; None: waiting for a keyframe
        self.highest: int | None = None  # the highest sequence number stored
        self.held = 0  # frames completed behind the hole at next_seq
        self._held_first: int | None = None  # the first sequence number of the last frame counted in held
        self.waiting = 0  # non-keyframes completed while waiting for a keyframe
        self.picture_lost = False  # set when a PLI is due; the caller clears it
        self.frames_out = 0
        self.dropped_frames = 0

    def add(self, seq: int, timestamp: int, start: bool, marker: bool, data: bytes) -> list[Frame] | None:
        """Store one packet; the frames it completes, in order (None most of the time)."""
        next_seq = self.next_seq
        if next_seq is not None:
            ahead = (seq - next_seq) & 0xFFFF
            if ahead >= 0x8000:
                return None  # before what was handed out: a late or duplicate packet
            if ahead >= CAPACITY:
                self._lose()  # the hole will not be filled now
        self.slots[seq & MASK] = (seq, timestamp, start, marker, data)
        highest = self.highest
        in_order = highest is not None and seq == (highest + 1) & 0xFFFF
        if highest is None or (seq - highest) & 0xFFFF < 0x8000:
            self.highest = seq
        if in_order and not marker and not start:
            return None  # the common case: the middle of a frame, in order
        return self._complete(seq, start)

    # ---------------------------------------------------------------- frames
    def _frame_at(self, first: int) -> tuple[int, Frame] | None:
        """The complete frame starting at `first`: (its last sequence number, the frame)."""
        slots = self.slots
        slot = slots[first & MASK]
        if slot is None or slot[0] != first or not slot[2]:
            return None
        timestamp = slot[1]
        parts = [slot[4]]
        seq = first
        for _ in range(CAPACITY):
            if slot[3]:  # marker: the frame's last packet
                break
            seq = (seq + 1) & 0xFFFF
            slot = slots[seq & MASK]
            if slot is None or slot[0] != seq:
                return None
            if slot[1] != timestamp:
                if not slot[2]:
                    return None
                seq = (seq - 1) & 0xFFFF  # the next frame starts here: this one had no marker
                break
            parts.append(slot[4])
        else:
            return None
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        return seq, Frame(timestamp, data, _is_keyframe(parts[0]))

    def _start_of(self, seq: int) -> int | None:
        """The first sequence number of the stored frame `seq` belongs to, if stored."""
        slots = self.slots
        slot = slots[seq & MASK]
        if slot is None or slot[0] != seq:
            return None
        timestamp = slot[1]
        for _ in range(CAPACITY):
            if slot[2]:
                return seq
            seq = (seq - 1) & 0xFFFF
            slot = slots[seq & MASK]
            if slot is None or slot[0] != seq or slot[1] != timestamp:
                return None
        return None

    def _take(self, first: int, last: int) -> None:
        slots = self.slots
        seq = first
        while True:
            slots[seq & MASK] = None
            if seq == last:
                return
            seq = (seq + 1) & 0xFFFF

    def _complete(self, seq: int, start: bool) -> list[Frame] | None:
        out: list[Frame] = []
        if self.next_seq is not None:
            self._drain(out)
        if start:  # a frame start also ends the frame before it (for a sender without markers)
            self._beyond((seq - 1) & 0xFFFF, out)
        self._beyond(seq, out)
        return out or None

    def _beyond(self, seq: int, out: list[Frame]) -> None:
        """The frame holding `seq` when it lies beyond the next frame to hand out (or while
        waiting for a keyframe): a complete keyframe jumps the queue, another frame waits
        (or is dropped while waiting for a keyframe)."""
        if self.next_seq is not None and (seq - self.next_seq) & 0xFFFF >= 0x8000:
            return
        first = self._start_of(seq)
        if first is None or first == self.next_seq:
            return
        found = self._frame_at(first)
        if found is None:
            return
        if found[1].keyframe:
            self._jump(first)
            self._drain(out)
        elif self.next_seq is None:
            self.waiting += 1
            self.dropped_frames += 1
            self._take(first, found[0])
            if self.waiting % PLI_EVERY == 0:
                self.picture_lost = True
        elif first != self._held_first:  # each held frame counted once
            self._held_first = first
            self.held += 1
            if self.held > MAX_HELD_FRAMES:
                self._lose()

    def _drain(self, out: list[Frame]) -> None:
        while self.next_seq is not None:
            found = self._frame_at(self.next_seq)
            if found is None:
                return
            last, frame = found
            self._take(self.next_seq, last)
            self.next_seq = (last + 1) & 0xFFFF
            self.held = 0
            self.frames_out += 1
            out.append(frame)

    def _jump(self, first: int) -> None:
        """Hand out from the keyframe at `first`: whatever is stored before it is dropped."""
        if self.next_seq is not None and first != self.next_seq:
            self.dropped_frames += 1  # at least the frame that missed a packet
        slots = self.slots
        for i, slot in enumerate(slots):
            if slot is not None and (slot[0] - first) & 0xFFFF >= 0x8000:
                slots[i] = None
        self.next_seq = first
        self.held = 0
        self.waiting = 0

    def _lose(self) -> None:
        """Give up on the hole: wait for a keyframe (asked for with a PLI)."""
        self.next_seq = None
        self.held = 0
        self.waiting = 0
        self.picture_lost = True
