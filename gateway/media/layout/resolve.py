"""Layout -> concrete windows: run the template (or take the custom regions), bind every
region to a participant's track and convert it to canvas pixels, bottom layer first.

Who is the main (the big window) when the layout names one: their camera, or their screen
share for screen-oriented templates. Otherwise: the first screen share for screen-oriented
templates, the active speaker for speaker-following ones, else the first source. Templates
may still refine it: a screen-oriented template puts a screen share big even when the named
main only has a camera, and voice_activated follows the active speaker whenever one is known
(the named main is its fallback during silence).
"""

from __future__ import annotations

from gateway.media.layout.model import Layout, Region, SourceRef, parse_color
from gateway.media.layout.placed import PlacedRegion, TemplateContext, VideoSource
from gateway.media.layout.templates import MainPreference, TemplateRegistry, main_preference


class UnknownSource(ValueError):
    """A region (or template output) names a participant who has no source in the room."""

    def __init__(self, where: str, participant: str) -> None:
        super().__init__(f"{where}: participant {participant!r} is not in the room")
        self.where = where
        self.participant = participant


def resolve(layout: Layout, sources: list[VideoSource], templates: TemplateRegistry,
            active_speaker: str | None = None) -> list[PlacedRegion]:
    """Concrete windows for ``layout`` over the room's ``sources`` (join order), sorted by z
    then by the order the template or the layout gave them."""
    if layout.template == "custom":
        bound = _bind_custom(layout, sources)
    else:
        template = templates.get(layout.template)
        ctx = _context(layout, sources, main_preference(template), active_speaker)
        bound = [(region, _source_of(sources, region.source, f"{layout.template}[{index}]"))
                 for index, region in enumerate(template(ctx))]
    placed = [_placed(layout, region, ref, source) for region, (ref, source) in bound]
    return sorted(placed, key=lambda region: region.z)


# -------------------------------------------------------------------------------------------
# Finding sources
# -------------------------------------------------------------------------------------------

def _pictures_of(sources: list[VideoSource], participant: str) -> list[VideoSource]:
    """Sources of one participant, named by participant id or, failing that, by a name only
    one participant has (the identity a user typed)."""
    by_id = [source for source in sources if source.participant_id == participant]
    if by_id:
        return by_id
    by_name = [source for source in sources if source.name and source.name == participant]
    return by_name if len({source.participant_id for source in by_name}) == 1 else []


def _prefer(pictures: list[VideoSource], track: str) -> VideoSource | None:
    exact = [source for source in pictures if source.track == track]
    return (exact or pictures or [None])[0]


Binding = tuple[SourceRef | None, VideoSource | None]  # the window's track, the source naming it


def _source_of(sources: list[VideoSource], ref: SourceRef | None, where: str) -> Binding:
    if ref is None:
        return None, None
    pictures = _pictures_of(sources, ref.participant)
    if not pictures:
        raise UnknownSource(where=where, participant=ref.participant)
    # a missing track (share not started yet) keeps its window: the placeholder shows
    participant = pictures[0].participant_id
    return SourceRef(participant=participant, track=ref.track), _prefer(pictures, ref.track)


# -------------------------------------------------------------------------------------------
# Templates
# -------------------------------------------------------------------------------------------

def _pick_main(layout: Layout, sources: list[VideoSource], preference: MainPreference,
               active_speaker: str | None) -> VideoSource | None:
    if layout.main is not None:
        theirs = _pictures_of(sources, layout.main)
        if theirs:
            return _prefer(theirs, "screen" if preference == "screen" else "camera")
    if preference == "screen":
        screens = [source for source in sources if source.track == "screen"]
        if screens:
            return screens[0]
    if preference == "speaker" and active_speaker is not None:
        speaking = _pictures_of(sources, active_speaker)
        if speaking:
            return _prefer(speaking, "camera")
    return sources[0] if sources else None


def _limit(sources: list[VideoSource], main: VideoSource | None, limit: int) -> list[VideoSource]:
    """The first ``limit`` sources in join order, the main always among them."""
    room = limit - (1 if main in sources else 0)
    kept: list[VideoSource] = []
    for source in sources:
        if source == main:
            kept.append(source)
        elif room > 0:
            kept.append(source)
            room -= 1
    return kept


def _context(layout: Layout, sources: list[VideoSource], preference: MainPreference,
             active_speaker: str | None) -> TemplateContext:
    main = _pick_main(layout, sources, preference, active_speaker)
    if active_speaker is not None:
        speaking = _pictures_of(sources, active_speaker)
        active_speaker = speaking[0].participant_id if speaking else active_speaker
    return TemplateContext(canvas=layout.canvas, sources=_limit(sources, main, layout.max_videos),
                           main=main, active_speaker=active_speaker, max_videos=layout.max_videos)


# -------------------------------------------------------------------------------------------
# Custom regions
# -------------------------------------------------------------------------------------------

def _bind_custom(layout: Layout, sources: list[VideoSource]) -> list[tuple[Region, Binding]]:
    """Explicit regions keep their source; regions with ``source=None`` are filled in order
    with the sources no explicit region shows (TRTC: a null fixedVideoUser lets the server
    choose), and stay empty windows once those run out."""
    explicit = [_source_of(sources, region.source, f"regions[{index}]")
                for index, region in enumerate(layout.regions)]
    shown = {(ref.participant, ref.track) for ref, _ in explicit if ref is not None}
    pool = [source for source in sources[:layout.max_videos]
            if (source.participant_id, source.track) not in shown]
    bound: list[tuple[Region, Binding]] = []
    for region, binding in zip(layout.regions, explicit, strict=True):
        if region.source is None and pool:
            source = pool.pop(0)
            binding = SourceRef(participant=source.participant_id, track=source.track), source
        bound.append((region, binding))
    return bound


# -------------------------------------------------------------------------------------------
# Conversion
# -------------------------------------------------------------------------------------------

def _placeholder(region: Region, source: VideoSource | None) -> str:
    """An audio-only participant has no last frame to hold: show their name card instead
    (TRTC: audio-only users still get a window)."""
    if region.placeholder == "last" and source is not None and not source.has_video:
        return "name"
    return region.placeholder


def _placed(layout: Layout, region: Region, ref: SourceRef | None,
            source: VideoSource | None) -> PlacedRegion:
    x, y, w, h = region.pixels(layout.canvas)
    crop = region.crop
    return PlacedRegion(
        x=x, y=y, w=w, h=h, z=region.z,
        participant_id=None if ref is None else ref.participant,
        track="camera" if ref is None else ref.track,
        name=source.name if source is not None else "",
        fit=region.fit,
        crop=None if crop is None else (crop.x, crop.y, crop.w, crop.h),
        alpha=region.alpha,
        placeholder=_placeholder(region, source),
        placeholder_image=region.placeholder_image,
        background=None if region.background is None else parse_color(region.background),
    )
