"""Jocloud mix templates 1-5 (seeds 002 and 003, ``templateid``).

Choices where the seeds are silent:

* horizontal (1) and vertical (2): the small windows use the shared strip geometry
  (:mod:`plugins.layouts.strips`): 1/s of the canvas per window, s = others clamped to 4..8,
  at most 2 lines of 8 -> 17 pictures. The big window takes the rest of the canvas.
* tiled (3): s = ceil(sqrt(n)) columns, ceil(n / s) rows, all pictures one size (the canvas
  divided by the grid, floored to even pixels), a short last row centred; up to 16.
* corner (4): the main fills the canvas; small windows are 1/4 of the canvas width and height,
  2% of the canvas in from the edges, filled bottom-right, bottom-left, top-right, top-left
  (a single guest sits where picture-in-picture usually is).
* five_up (5, "5 users horizontal layout"): the horizontal idea sized for five: the main
  across the top 3/4 of the canvas, up to 4 others in a row of quarter-width windows along
  the bottom 1/4 (each keeps the canvas aspect, so the row is seamless); fewer than 4
  others are centred.
"""

from __future__ import annotations

import math

from gateway.media.layout.model import Region
from gateway.media.layout.placed import TemplateContext
from gateway.media.layout.templates import Rect, box, cast, equal_cells, full, place, sized
from plugins.layouts.strips import big_and_strip

STRIP_MAX = 17  # 1 big + 2 lines of 8
TILED_MAX = 16
CORNER_MAX = 5
FIVE_UP_MAX = 5
CORNER_SIZE = 1 / 4
CORNER_MARGIN = 0.02


def horizontal(ctx: TemplateContext) -> list[Region]:
    """Template 1: main large on top, others small below."""
    main, others = cast(ctx, STRIP_MAX)
    return big_and_strip(ctx.canvas, main, others, "bottom")


def vertical(ctx: TemplateContext) -> list[Region]:
    """Template 2: main large on the left, others small on the right."""
    main, others = cast(ctx, STRIP_MAX)
    return big_and_strip(ctx.canvas, main, others, "right")


def tile_shape(count: int) -> tuple[int, int]:
    cols = max(math.ceil(math.sqrt(count)), 1)
    return cols, max(math.ceil(count / cols), 1)


def tiled(ctx: TemplateContext) -> list[Region]:
    """Template 3: equal pictures, up to 4x4."""
    return equal_tiles(ctx, TILED_MAX)


def equal_tiles(ctx: TemplateContext, cap: int) -> list[Region]:
    main, others = cast(ctx, cap)
    if main is None:
        return []
    pictures = [main, *others]
    cols, rows = tile_shape(len(pictures))
    cells = equal_cells(ctx.canvas, full(ctx.canvas), cols, rows, len(pictures))
    return [place(source, cell) for source, cell in zip(pictures, cells, strict=True)]


def corner_rects(ctx: TemplateContext, count: int) -> list[Rect]:
    canvas = ctx.canvas
    W, H = canvas.width, canvas.height
    w, h = W * CORNER_SIZE, H * CORNER_SIZE
    left, top = W * CORNER_MARGIN, H * CORNER_MARGIN
    right, bottom = W - left - w, H - top - h
    spots = [(right, bottom), (left, bottom), (right, top), (left, top)]
    return [sized(canvas, x, y, w, h) for x, y in spots[:count]]


def corner(ctx: TemplateContext) -> list[Region]:
    """Template 4: main fills the canvas, up to 4 small windows hover at the corners."""
    main, others = cast(ctx, CORNER_MAX)
    if main is None:
        return []
    rects = corner_rects(ctx, len(others))
    return [place(main, full(ctx.canvas)), *(place(s, r, z=1) for s, r in zip(others, rects, strict=True))]


def five_up(ctx: TemplateContext) -> list[Region]:
    """Template 5: main across the top 3/4, up to 4 quarter-size windows along the bottom."""
    main, others = cast(ctx, FIVE_UP_MAX)
    if main is None:
        return []
    canvas = ctx.canvas
    if not others:
        return [place(main, full(canvas))]
    W, H = canvas.width, canvas.height
    regions = [place(main, box(canvas, 0, 0, W, H * 3 / 4))]
    start = (W - len(others) * W / 4) / 2
    for index, source in enumerate(others):
        left = start + index * W / 4
        regions.append(place(source, box(canvas, left, H * 3 / 4, left + W / 4, H)))
    return regions
