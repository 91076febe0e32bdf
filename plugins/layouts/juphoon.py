"""Juphoon merge modes (seed 000: ``setmergemode`` 1-3) and smart modes (``setmergemode_i``).

Merge modes 4 (custom) and 5 (smart) are not templates: custom is the layout's own regions,
smart mode is a choice among the smart templates below. Choices where the seed is silent:

* tile (1): the TRTC grid.
* screen (scsMode 1, "pure screen sharing"): the share alone fills the canvas.
* podium (2, "share big, others small"): the seed's scsMode "platform" picture: the share
  (else the main) big on top, the others in the shared bottom strip (:mod:`.strips`).
* lecture (3): the share fills the canvas, the sharer's camera is a 1/4-size window in the
  bottom-right corner (2% margin, like the corner template); everyone else is hidden. Without
  a share the main fills the canvas alone.
* free (smart 1, freeLayout): ceil(sqrt(n)) columns, and every row stretches its windows to
  the full canvas width, so a short last row gets wider windows and no background shows.
* rect (smart 2, rectLayout): the same grid with all windows one size and a short last row
  centred (the tiled template without its 16 cap).
* big_small_x2 .. big_small_x10 (smart 3-11, "the main user shown N times"): the canvas is a
  k x k grid of unit cells; the main spans N x N cells in the top-left corner (N times a small
  window's width and height) and the others fill the remaining cells row-major (right of the
  main first, then the rows below). k is the smallest value >= N + 1 whose free cells hold
  everyone; a main alone fills the canvas.
* big_small_top (smart 12): main big on top, others small along the bottom strip;
  big_small_bottom (smart 13): main big at the bottom, others small along the top strip.
"""

from __future__ import annotations

from gateway.media.layout.model import Region
from gateway.media.layout.placed import TemplateContext
from gateway.media.layout.templates import (
    LayoutTemplate,
    box,
    cast,
    full,
    place,
    prefers,
    screen_main,
    split,
)
from plugins.layouts.jocloud import corner_rects, equal_tiles, tile_shape
from plugins.layouts.strips import big_and_strip
from plugins.layouts.trtc import grid

MAX_VIDEOS = 25

tile = grid


@prefers("screen")
def screen(ctx: TemplateContext) -> list[Region]:
    """scsMode 1 "pure screen sharing": the share alone fills the canvas (else the main)."""
    share = screen_main(ctx)
    return [place(share, full(ctx.canvas))] if share is not None else []


@prefers("screen")
def podium(ctx: TemplateContext) -> list[Region]:
    main, others = cast(ctx, MAX_VIDEOS, main=screen_main(ctx))
    return big_and_strip(ctx.canvas, main, others, "bottom")


@prefers("screen")
def lecture(ctx: TemplateContext) -> list[Region]:
    share = screen_main(ctx)
    if share is None:
        return []
    regions = [place(share, full(ctx.canvas))]
    if share.track != "screen" or ctx.max_videos < 2:
        return regions
    cameras = [s for s in ctx.sources if s.participant_id == share.participant_id and s.track == "camera"]
    if cameras:
        regions.append(place(cameras[0], corner_rects(ctx, 1)[0], z=1))
    return regions


def free(ctx: TemplateContext) -> list[Region]:
    main, others = cast(ctx, MAX_VIDEOS)
    if main is None:
        return []
    pictures = [main, *others]
    cols, rows = tile_shape(len(pictures))
    canvas = ctx.canvas
    regions: list[Region] = []
    for row, (top, height) in enumerate(split(0, canvas.height, rows)):
        in_row = pictures[row * cols:(row + 1) * cols]
        for source, (left, width) in zip(in_row, split(0, canvas.width, len(in_row)), strict=True):
            regions.append(place(source, box(canvas, left, top, left + width, top + height)))
    return regions


def rect(ctx: TemplateContext) -> list[Region]:
    return equal_tiles(ctx, MAX_VIDEOS)


def big_small_units(scale: int, others: int) -> int:
    """Side k of the unit grid for a main ``scale`` cells wide and ``others`` small windows."""
    units = scale + 1
    while units * units - scale * scale < others:
        units += 1
    return units


def big_small(scale: int) -> LayoutTemplate:
    def template(ctx: TemplateContext) -> list[Region]:
        main, others = cast(ctx, MAX_VIDEOS)
        if main is None:
            return []
        canvas = ctx.canvas
        if not others:
            return [place(main, full(canvas))]
        units = big_small_units(scale, len(others))
        xs = [x for x, _ in split(0, canvas.width, units)] + [canvas.width]
        ys = [y for y, _ in split(0, canvas.height, units)] + [canvas.height]
        regions = [place(main, box(canvas, 0, 0, xs[scale], ys[scale]))]
        free_cells = [(r, c) for r in range(units) for c in range(units) if r >= scale or c >= scale]
        for source, (r, c) in zip(others, free_cells, strict=False):
            regions.append(place(source, box(canvas, xs[c], ys[r], xs[c + 1], ys[r + 1])))
        return regions

    template.__name__ = template.__qualname__ = f"big_small_x{scale}"
    template.__doc__ = f"Smart mode {scale + 1}: the main shown {scale} times the size of the others."
    return template


def big_small_top(ctx: TemplateContext) -> list[Region]:
    main, others = cast(ctx, MAX_VIDEOS)
    return big_and_strip(ctx.canvas, main, others, "bottom")


def big_small_bottom(ctx: TemplateContext) -> list[Region]:
    main, others = cast(ctx, MAX_VIDEOS)
    return big_and_strip(ctx.canvas, main, others, "top")


BIG_SMALL = {f"big_small_x{scale}": big_small(scale) for scale in range(2, 11)}
