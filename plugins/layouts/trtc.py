"""TRTC cloud-recording mix layouts (seed 001 §6, ``MixLayoutMode``): grid, floating, screen share.

Choices where the seed is silent:

* grid: cells tile the whole canvas (edges snapped to even pixels, so cells of one grid may
  differ by 2 px); a short last row stays left-aligned, the remaining cells show background.
* floating: tile sizes are 23.5% / 18.8% of the canvas width and height snapped to even
  pixels once, so every small window has the same size; positions come from the percentages
  (margin + i * (tile + gap)), measured from the left and from the bottom edge.
* screen_share: one picture alone fills the canvas (the table's 4/5 big window would leave an
  empty column). Small windows fill the column next to the big window first, top to bottom,
  then the outer column; with more than 17 videos both columns hold 8 (full height) and the
  overflow runs left to right along the bottom, under the big window.
"""

from __future__ import annotations

from gateway.media.layout.model import Region
from gateway.media.layout.placed import TemplateContext
from gateway.media.layout.templates import box, cast, full, grid_cells, place, prefers, screen_main, sized

GRID_MAX = 25
FLOATING_MAX = 25
SCREEN_SHARE_MAX = 24


def grid_shape(count: int) -> tuple[int, int]:
    """(cols, rows) of the TRTC grid for ``count`` videos."""
    if count <= 1:
        return 1, 1
    if count == 2:
        return 2, 1
    if count <= 4:
        return 2, 2
    if count <= 9:
        return 3, 3
    if count <= 16:
        return 4, 4
    return 5, 5


def grid(ctx: TemplateContext) -> list[Region]:
    """Equal cells, row-major in join order (the main, if any, first)."""
    main, others = cast(ctx, GRID_MAX)
    if main is None:
        return []
    pictures = [main, *others]
    cols, rows = grid_shape(len(pictures))
    cells = grid_cells(ctx.canvas, full(ctx.canvas), cols, rows)
    return [place(source, cell) for source, cell in zip(pictures, cells, strict=False)]


def floating(ctx: TemplateContext) -> list[Region]:
    """Main fills the canvas; the others float above it from the bottom-left corner."""
    main, others = cast(ctx, FLOATING_MAX)
    if main is None:
        return []
    canvas = ctx.canvas
    W, H = canvas.width, canvas.height
    per_row, tile, gap = (4, 0.235, 0.012) if len(others) + 1 <= 17 else (5, 0.188, 0.010)
    regions = [place(main, full(canvas), z=0)]
    for index, source in enumerate(others):
        row, col = divmod(index, per_row)  # row 0 is the bottom row
        x = W * (gap + col * (tile + gap))
        y = H * (1 - (row + 1) * (tile + gap))
        regions.append(place(source, sized(canvas, x, y, W * tile, H * tile), z=1))
    return regions


def _screen_share_sizes(count: int) -> tuple[int, int, float, float]:
    """(small width divisor, small height divisor, big width, big height) as canvas fractions."""
    if count <= 5:
        return 5, 4, 4 / 5, 1.0
    if count <= 7:
        return 7, 6, 6 / 7, 1.0
    if count <= 9:
        return 9, 8, 8 / 9, 1.0
    if count <= 17:
        return 10, 8, 4 / 5, 1.0
    return 10, 8, 4 / 5, 7 / 8


@prefers("screen")
def screen_share(ctx: TemplateContext) -> list[Region]:
    """Big window (the screen share if any) on the left, small windows on the right."""
    main, others = cast(ctx, SCREEN_SHARE_MAX, main=screen_main(ctx))
    if main is None:
        return []
    canvas = ctx.canvas
    if not others:
        return [place(main, full(canvas))]
    W, H = canvas.width, canvas.height
    wdiv, hdiv, big_w, big_h = _screen_share_sizes(len(others) + 1)
    per_column = hdiv  # 4, 6 or 8 windows fill the column's height
    regions = [place(main, box(canvas, 0, 0, W * big_w, H * big_h))]
    for index, source in enumerate(others):
        column, row = divmod(index, per_column)
        if column < 2:
            left = W * big_w + column * W / wdiv
            top = row * H / hdiv
        else:  # overflow (>17 videos): one row along the bottom, under the big window
            left, top = (index - 2 * per_column) * W / wdiv, H * big_h
        regions.append(place(source, box(canvas, left, top, left + W / wdiv, top + H / hdiv)))
    return regions
