"""Layout templates: named functions that place a room's video sources on the canvas.

A :data:`LayoutTemplate` takes a :class:`~gateway.media.layout.placed.TemplateContext` and
returns :class:`~gateway.media.layout.model.Region` objects in pixels (``units="px"``), each
with ``source`` set to the :class:`~gateway.media.layout.model.SourceRef` of the picture it
shows, or ``None`` for an empty window. Plugins supply templates through the
``mediagate_layout_templates`` hook; the core collects them in a :class:`TemplateRegistry`.

The geometry helpers below keep every rectangle inside the canvas and on even pixels
(yuv420p chroma is subsampled 2x2, so an odd edge smears a neighbour's colour).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Literal, TypeVar

from gateway.media.layout.model import Canvas, Region, SourceRef
from gateway.media.layout.placed import TemplateContext, VideoSource

LayoutTemplate = Callable[[TemplateContext], list[Region]]
Rect = tuple[int, int, int, int]  # x, y, w, h in canvas pixels
MainPreference = Literal["camera", "screen", "speaker"]

RESERVED_NAMES = frozenset({"custom"})  # "custom" means the layout's own regions, never a template

T = TypeVar("T")


# -------------------------------------------------------------------------------------------
# Registry
# -------------------------------------------------------------------------------------------

class UnknownTemplate(KeyError, ValueError):
    """A layout names a template nobody registered. A KeyError for dict-like use, a ValueError
    so request validation turns it into a 400 naming the field."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(name)
        self.name = name
        self.known = sorted(known)
        self.where = "template"

    def __str__(self) -> str:  # KeyError would print only the repr of the name
        known = ", ".join(self.known) or "none"
        return f"unknown layout template {self.name!r}; known templates: {known} (or 'custom' with regions)"


class TemplateRegistry:
    """Templates by name, filled from the plugins' ``mediagate_layout_templates`` hooks."""

    def __init__(self, templates: Mapping[str, LayoutTemplate] | None = None) -> None:
        self._templates: dict[str, LayoutTemplate] = {}
        for name, template in (templates or {}).items():
            self.register(name, template)

    def register(self, name: str, template: LayoutTemplate, *, replace: bool = False) -> None:
        if not name or name in RESERVED_NAMES:
            raise ValueError(f"layout template name {name!r} is reserved or empty")
        if not callable(template):
            raise TypeError(f"layout template {name!r} is not callable")
        if name in self._templates and not replace:
            # two plugins claiming one name is a configuration error, not last-one-wins
            raise ValueError(f"layout template {name!r} is already registered")
        self._templates[name] = template

    def update(self, templates: Mapping[str, LayoutTemplate]) -> None:
        for name, template in templates.items():
            self.register(name, template)

    def get(self, name: str) -> LayoutTemplate:
        try:
            return self._templates[name]
        except KeyError:
            raise UnknownTemplate(name, list(self._templates)) from None

    def names(self) -> list[str]:
        return sorted(self._templates)

    def __getitem__(self, name: str) -> LayoutTemplate:
        return self.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._templates

    def __iter__(self) -> Iterator[str]:
        return iter(self._templates)

    def __len__(self) -> int:
        return len(self._templates)


def prefers(kind: MainPreference) -> Callable[[T], T]:
    """Mark which picture the resolver should pick as ``ctx.main`` when the layout names no
    main (or names a participant who also shares a screen): its camera, a screen share, or
    the active speaker."""

    def mark(template: T) -> T:
        setattr(template, "main_preference", kind)  # noqa: B010 - functions take attributes
        return template

    return mark


def main_preference(template: LayoutTemplate) -> MainPreference:
    return getattr(template, "main_preference", "camera")


# -------------------------------------------------------------------------------------------
# Geometry
# -------------------------------------------------------------------------------------------

def even(value: float) -> int:
    """Nearest even integer, halves rounded up (deterministic, unlike round())."""
    return math.floor(value / 2 + 0.5) * 2


def even_floor(value: float) -> int:
    """Largest even integer not above ``value``: sizes that must fit ``n`` times."""
    return math.floor(value / 2) * 2


def _clamp(canvas: Canvas, x: int, y: int, x1: int, y1: int) -> Rect:
    x = min(max(x, 0), canvas.width - 2)
    y = min(max(y, 0), canvas.height - 2)
    x1 = min(max(x1, x + 2), canvas.width)
    y1 = min(max(y1, y + 2), canvas.height)
    return x, y, x1 - x, y1 - y


def box(canvas: Canvas, x0: float, y0: float, x1: float, y1: float) -> Rect:
    """Rectangle from float edges, each edge snapped to even pixels: windows that share an
    edge in floats share it in pixels (no gap, no overlap)."""
    return _clamp(canvas, even(x0), even(y0), even(x1), even(y1))


def sized(canvas: Canvas, x: float, y: float, w: float, h: float) -> Rect:
    """Rectangle whose position and size are snapped separately: equal sizes stay equal
    (floating and corner windows), at the cost of gaps varying by up to 2 px."""
    x0, y0 = even(x), even(y)
    return _clamp(canvas, x0, y0, x0 + max(even(w), 2), y0 + max(even(h), 2))


def split(start: float, length: float, parts: int) -> list[tuple[int, int]]:
    """Cut ``[start, start + length)`` into ``parts`` (position, size) spans with even edges."""
    edges = [even(start + length * i / parts) for i in range(parts + 1)]
    return [(a, b - a) for a, b in itertools.pairwise(edges)]


def grid_cells(canvas: Canvas, area: Rect, cols: int, rows: int) -> list[Rect]:
    """``cols`` x ``rows`` cells tiling ``area`` exactly, row-major (sizes differ by <= 2 px)."""
    x, y, w, h = area
    return [_clamp(canvas, cx, cy, cx + cw, cy + ch)
            for cy, ch in split(y, h, rows) for cx, cw in split(x, w, cols)]


def equal_cells(canvas: Canvas, area: Rect, cols: int, rows: int, count: int) -> list[Rect]:
    """``count`` cells of one size (``area`` / cols x rows, floored to even), row-major, the
    grid centred in ``area`` and a short last row centred under the others."""
    x, y, w, h = area
    cw, ch = max(even_floor(w / cols), 2), max(even_floor(h / rows), 2)
    used_rows = math.ceil(count / cols)
    top = y + even_floor((h - used_rows * ch) / 2)
    cells: list[Rect] = []
    for index in range(count):
        row, col = divmod(index, cols)
        in_row = min(cols, count - row * cols)
        left = x + even_floor((w - in_row * cw) / 2)
        cx, cy = left + col * cw, top + row * ch
        cells.append(_clamp(canvas, cx, cy, cx + cw, cy + ch))
    return cells


def full(canvas: Canvas) -> Rect:
    return 0, 0, canvas.width, canvas.height


# -------------------------------------------------------------------------------------------
# Sources
# -------------------------------------------------------------------------------------------

def place(source: VideoSource | None, rect: Rect, z: int = 0) -> Region:
    """A pixel region showing ``source`` (None: an empty window the compositor fills with
    its placeholder)."""
    ref = None if source is None else SourceRef(participant=source.participant_id, track=source.track)
    x, y, w, h = rect
    return Region(source=ref, x=x, y=y, w=w, h=h, units="px", z=z)


def cast(ctx: TemplateContext, cap: int, main: VideoSource | None = None) -> tuple[
        VideoSource | None, list[VideoSource]]:
    """The main picture and the others in join order, at most ``cap`` (and ``max_videos``)
    pictures in all; the main is always kept even when it joined late."""
    sources = ctx.sources
    main = main or ctx.main or (sources[0] if sources else None)
    if main is None:
        return None, []
    limit = max(min(cap, ctx.max_videos) - 1, 0)
    others = [source for source in sources if source != main][:limit]
    return main, others


def screen_main(ctx: TemplateContext) -> VideoSource | None:
    """The main for screen-oriented templates: ctx.main when it is a screen share, else the
    first screen share, else ctx.main (or the first source)."""
    if ctx.main is not None and ctx.main.track == "screen":
        return ctx.main
    screens = [source for source in ctx.sources if source.track == "screen"]
    if screens:
        return screens[0]
    return ctx.main or (ctx.sources[0] if ctx.sources else None)
