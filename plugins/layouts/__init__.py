"""Built-in layout templates: the seeds' TRTC, Jocloud and Juphoon layouts plus speaker views.

Each vendor's templates live in their own module with the geometry choices documented
there; this plugin only hands the name -> template table to the core.
"""

from __future__ import annotations

from gateway.hookspecs import hookimpl
from gateway.media.layout.templates import LayoutTemplate
from plugins.layouts import jocloud, juphoon, speaker, trtc

TEMPLATES: dict[str, LayoutTemplate] = {
    # TRTC MixLayoutMode
    "grid": trtc.grid,
    "floating": trtc.floating,
    "screen_share": trtc.screen_share,
    # Jocloud templateid 1-5
    "horizontal": jocloud.horizontal,
    "vertical": jocloud.vertical,
    "tiled": jocloud.tiled,
    "corner": jocloud.corner,
    "five_up": jocloud.five_up,
    # Juphoon setmergemode 1-3 and setmergemode_i smart modes 1-13
    "tile": juphoon.tile,
    "podium": juphoon.podium,
    "lecture": juphoon.lecture,
    "screen": juphoon.screen,
    "free": juphoon.free,
    "rect": juphoon.rect,
    **juphoon.BIG_SMALL,
    "big_small_top": juphoon.big_small_top,
    "big_small_bottom": juphoon.big_small_bottom,
    # LiveKit-style speaker views
    "speaker": speaker.speaker,
    "voice_activated": speaker.voice_activated,
}


class LayoutsPlugin:
    @hookimpl
    def mediagate_layout_templates(self) -> dict[str, LayoutTemplate]:
        return dict(TEMPLATES)
