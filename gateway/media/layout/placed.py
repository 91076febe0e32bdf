"""What templates receive and what the compositor draws.

Templates get a :class:`TemplateContext` (the canvas and the room's video sources in order)
and return :class:`~gateway.media.layout.model.Region` objects in pixels with their source
set. The resolver turns the layout (template or custom regions) into :class:`PlacedRegion`
values: concrete rectangles bound to a participant's track, sorted by z-order, ready to draw.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from gateway.media.layout.model import Canvas


@dataclass(frozen=True)
class VideoSource:
    """One picture a template can place: a participant's camera or screen share."""

    participant_id: str
    track: Literal["camera", "screen"] = "camera"
    name: str = ""
    has_video: bool = True  # audio-only participants still get a window (placeholder)


@dataclass(frozen=True)
class TemplateContext:
    canvas: Canvas
    sources: list[VideoSource]  # join order, at most max_videos, screen shares included
    main: VideoSource | None = None  # the big window: layout.main, else screen share / speaker / first
    active_speaker: str | None = None
    max_videos: int = 25
    options: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class PlacedRegion:
    x: int
    y: int
    w: int
    h: int
    z: int = 0
    participant_id: str | None = None  # None: an empty window (placeholder only)
    track: Literal["camera", "screen"] = "camera"
    name: str = ""
    fit: Literal["fit", "fill"] = "fit"
    crop: tuple[int, int, int, int] | None = None  # x, y, w, h in source pixels (0 w/h = to edge)
    alpha: float = 1.0
    placeholder: Literal["black", "last", "image", "name", "none"] = "last"
    placeholder_image: str | None = None
    background: tuple[int, int, int] | None = None  # RGB behind the picture (letterbox)
