"""Speaker layouts, as LiveKit users know them: the main big, everyone else in a filmstrip.

The filmstrip runs down the right-hand side (LiveKit's speaker layout puts its carousel
there), using the shared strip geometry of :mod:`plugins.layouts.strips`: windows 1/s of the
canvas with s = others clamped to 4..8, up to 3 columns of 8 (25 pictures).

voice_activated shows the active speaker big when one is known and in the picture; otherwise
it falls back to ``ctx.main`` (the layout's ``main``, else the first source), so the picture
does not go blank during silence.
"""

from __future__ import annotations

from gateway.media.layout.model import Region
from gateway.media.layout.placed import TemplateContext, VideoSource
from gateway.media.layout.templates import cast, prefers
from plugins.layouts.strips import big_and_strip

MAX_VIDEOS = 25


def speaker(ctx: TemplateContext) -> list[Region]:
    main, others = cast(ctx, MAX_VIDEOS)
    return big_and_strip(ctx.canvas, main, others, "right")


def active_source(ctx: TemplateContext) -> VideoSource | None:
    """The active speaker's camera (else any picture of theirs), None when silent or absent."""
    if ctx.active_speaker is None:
        return None
    theirs = [s for s in ctx.sources if s.participant_id == ctx.active_speaker]
    cameras = [s for s in theirs if s.track == "camera"]
    return (cameras or theirs or [None])[0]


@prefers("speaker")
def voice_activated(ctx: TemplateContext) -> list[Region]:
    main, others = cast(ctx, MAX_VIDEOS, main=active_source(ctx))
    return big_and_strip(ctx.canvas, main, others, "right")
