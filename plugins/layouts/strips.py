"""Big window plus a strip of small windows along one side of the canvas.

Shared by the Jocloud horizontal/vertical templates, Juphoon podium and big-small top/bottom,
and speaker. Small windows keep the canvas' aspect: each is 1/s of the canvas width and
height, with s = the number of others clamped to 4..8 windows per line (so one or two others
are not blown up to half the screen, and a line never holds more than the seeds' 8). Further
lines stack toward the big window. Lines fill in reading order (rows left to right from the
top, columns top to bottom from the left), and a short last line is centred. The big window
takes the rest of the canvas.
"""

from __future__ import annotations

import math
from typing import Literal

from gateway.media.layout.model import Canvas, Region
from gateway.media.layout.placed import VideoSource
from gateway.media.layout.templates import Rect, box, full, place

Side = Literal["top", "bottom", "left", "right"]


def slots_per_line(count: int) -> int:
    return min(max(count, 4), 8)


def strip(canvas: Canvas, count: int, side: Side) -> tuple[Rect, list[Rect]]:
    """(big window, small windows) for ``count`` small windows along ``side``."""
    if count <= 0:
        return full(canvas), []
    W, H = canvas.width, canvas.height
    slots = slots_per_line(count)
    lines = math.ceil(count / slots)
    cell_w, cell_h = W / slots, H / slots
    smalls: list[Rect] = []
    for index in range(count):
        line, pos = divmod(index, slots)
        in_line = min(slots, count - line * slots)
        if side in ("top", "bottom"):
            top = line * cell_h if side == "top" else H - (lines - line) * cell_h
            left = (W - in_line * cell_w) / 2 + pos * cell_w
        else:
            left = line * cell_w if side == "left" else W - (lines - line) * cell_w
            top = (H - in_line * cell_h) / 2 + pos * cell_h
        smalls.append(box(canvas, left, top, left + cell_w, top + cell_h))
    band_w, band_h = lines * cell_w, lines * cell_h
    big = {
        "top": (0, band_h, W, H),
        "bottom": (0, 0, W, H - band_h),
        "left": (band_w, 0, W, H),
        "right": (0, 0, W - band_w, H),
    }[side]
    return box(canvas, *big), smalls


def big_and_strip(canvas: Canvas, main: VideoSource | None, others: list[VideoSource],
                  side: Side) -> list[Region]:
    if main is None:
        return []
    big, smalls = strip(canvas, len(others), side)
    return [place(main, big), *(place(source, rect) for source, rect in zip(others, smalls, strict=True))]
