"""The layout model (API.md "Composition"): canvas, template or custom regions, watermarks,
audio selection. These pydantic models validate ``PUT /v1/rooms/{id}/layout`` and the
``layout`` of egress tasks, and are what the compositor and mixer consume."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_HEX = re.compile(r"^[0-9A-Fa-f]{6}$")
# The same rule as a JSON-schema pattern (ECMA-262 reads it as Python and pydantic do)
COLOR_PATTERN = r"^#?[0-9A-Fa-f]{6}$"
COLOR_DOC = "RRGGBB (six hex digits, an optional leading #)"
FILE_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"


def color_field(default: str | None, description: str = COLOR_DOC) -> Any:
    """A colour typed in the served schema exactly as :func:`parse_color` reads it."""
    return Field(default, pattern=COLOR_PATTERN, description=description)


def file_id_field(default: Any = ..., description: str = "file_id of an uploaded image") -> Any:
    return Field(default, pattern=FILE_ID_PATTERN, description=description)


def parse_color(value: str) -> tuple[int, int, int]:
    """``"FF8800"`` or ``"#ff8800"`` -> (255, 136, 0)."""
    text = value.lstrip("#")
    if not _HEX.match(text):
        raise ValueError(f"colour must be 6 hex digits RRGGBB, got {value!r}")
    return int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16)


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _check_color(value: str | None) -> str | None:
    if value is not None:
        parse_color(value)
        return value.lstrip("#").upper()
    return value


class Background(Model):
    color: str = color_field("000000")
    image: str | None = file_id_field(None, "file_id of an uploaded image, drawn over the colour")
    scale: Literal["fill", "fit", "stretch"] = "fill"

    _color = field_validator("color")(_check_color)


class Canvas(Model):
    width: int = Field(1280, ge=16, le=4096, description="pixels; an odd value is rounded down to even (yuv420p)")
    height: int = Field(720, ge=16, le=4096, description="pixels; an odd value is rounded down to even (yuv420p)")
    fps: int = Field(30, ge=1, le=60)
    background: Background = Field(default_factory=Background)

    @model_validator(mode="after")
    def _even(self) -> Canvas:
        # yuv420p needs even dimensions; round down rather than refuse (vendors round to 4/8)
        self.width -= self.width % 2
        self.height -= self.height % 2
        return self


class SourceRef(Model):
    participant: str = Field(description="participant id, or identity (or a name only one participant has)")
    track: Literal["camera", "screen"] = "camera"


class Crop(Model):
    x: int = Field(0, ge=0, le=16384)
    y: int = Field(0, ge=0, le=16384)
    w: int = Field(0, ge=0, le=16384, description="0 means to the source's right edge")
    h: int = Field(0, ge=0, le=16384, description="0 means to the source's bottom edge")


class Region(Model):
    source: SourceRef | None = Field(None, description="null lets the server choose who fills it")
    x: float = Field(0, ge=0)
    y: float = Field(0, ge=0)
    w: float = Field(gt=0)
    h: float = Field(gt=0)
    units: Literal["px", "fraction"] = "px"
    z: int = Field(0, ge=0, le=16)
    fit: Literal["fit", "fill"] = "fit"
    crop: Crop | None = None
    alpha: float = Field(1.0, ge=0, le=1)
    placeholder: Literal["black", "last", "image", "name", "none"] = "last"
    placeholder_image: str | None = file_id_field(None, "file_id shown when placeholder=image")
    background: str | None = color_field(None, f"{COLOR_DOC} behind this window (letterbox bars)")

    _bg = field_validator("background")(_check_color)

    def pixels(self, canvas: Canvas) -> tuple[int, int, int, int]:
        """(x, y, w, h) in canvas pixels, snapped to even values for 4:2:0 chroma."""
        if self.units == "fraction":
            x, y = self.x * canvas.width, self.y * canvas.height
            w, h = self.w * canvas.width, self.h * canvas.height
        else:
            x, y, w, h = self.x, self.y, self.w, self.h
        x0, y0 = int(round(x)) & ~1, int(round(y)) & ~1
        x1, y1 = int(round(x + w)), int(round(y + h))
        x1 += x1 & 1
        y1 += y1 & 1
        x1, y1 = min(x1, canvas.width), min(y1, canvas.height)
        return x0, y0, max(x1 - x0, 2), max(y1 - y0, 2)


class ImageWatermark(Model):
    file_id: str = file_id_field()
    x: float = Field(0, ge=0)
    y: float = Field(0, ge=0)
    w: float = Field(gt=0)
    h: float = Field(gt=0)
    units: Literal["px", "fraction"] = "px"
    alpha: float = Field(1.0, ge=0, le=1)
    scale: Literal["fit", "fill", "stretch"] = "fit"


class TextWatermark(Model):
    text: str = Field(min_length=1, max_length=512)
    x: float = Field(0, ge=0)
    y: float = Field(0, ge=0)
    units: Literal["px", "fraction"] = "px"
    size: int = Field(24, gt=0, le=200)
    color: str = color_field("FFFFFF")
    background: str | None = color_field(None, f"{COLOR_DOC} box behind the text; null is none")
    alpha: float = Field(1.0, ge=0, le=1)
    font: str | None = Field(None, description="font file path or family; null uses the configured CJK font")

    _c = field_validator("color", "background")(_check_color)


class TimestampWatermark(Model):
    format: str = Field("%Y-%m-%d %H:%M:%S", min_length=1, max_length=128)
    x: float = Field(0, ge=0)
    y: float = Field(0, ge=0)
    units: Literal["px", "fraction"] = "px"
    size: int = Field(24, gt=0, le=200)
    color: str = color_field("FFFFFF")
    background: str | None = color_field(None, f"{COLOR_DOC} box behind the text; null is none")
    alpha: float = Field(1.0, ge=0, le=1)
    utc: bool = Field(False, description="Render UTC instead of the node's local time")
    font: str | None = None

    _c = field_validator("color", "background")(_check_color)


class Watermarks(Model):
    images: list[ImageWatermark] = Field(default_factory=list, max_length=25)
    texts: list[TextWatermark] = Field(default_factory=list, max_length=25)
    timestamp: TimestampWatermark | None = None


class AudioSelection(Model):
    participants: list[str] | None = Field(None, description="who is mixed; null is everyone")
    channels: dict[str, Literal["left", "right", "both"]] = Field(default_factory=dict)


class Layout(Model):
    # what the validator below enforces, said in the schema: regions go with template 'custom' only
    model_config = ConfigDict(extra="forbid", json_schema_extra={"anyOf": [
        {"properties": {"template": {"const": "custom"}, "regions": {"minItems": 1}},
         "required": ["template", "regions"]},
        {"properties": {"template": {"not": {"const": "custom"}}, "regions": {"maxItems": 0}}},
    ]})

    canvas: Canvas = Field(default_factory=Canvas)
    template: str = Field("grid", min_length=1, max_length=64, description="grid, floating, screen_share, "
                          "horizontal, vertical, tiled, corner, five_up, speaker, voice_activated, big_small_x2..x10, "
                          "big_small_top, big_small_bottom, custom, or a plugin's template (the served schema "
                          "lists the templates this node has)")
    main: str | None = Field(None, description="participant shown big by templates that have a main window")
    screen_template: str | None = Field(None, min_length=1, max_length=64, description=(
        "template used instead while someone shares a screen (Juphoon smart mode scsMode)"))
    max_videos: int = Field(25, ge=1, le=64)
    regions: list[Region] = Field(default_factory=list, max_length=64, description=(
        "the windows of template 'custom' (at least one); any other template places the windows itself, "
        "so regions with another template are refused (400)"))
    watermarks: Watermarks = Field(default_factory=Watermarks)
    audio: AudioSelection = Field(default_factory=AudioSelection)

    @model_validator(mode="after")
    def _inside_canvas(self) -> Layout:
        for index, region in enumerate(self.regions):
            check_inside(f"regions[{index}]", region.x, region.y, region.w, region.h, region.units, self.canvas)
        for index, mark in enumerate(self.watermarks.images):
            check_inside(f"watermarks.images[{index}]", mark.x, mark.y, mark.w, mark.h, mark.units, self.canvas)
        for index, text in enumerate(self.watermarks.texts):
            check_inside(f"watermarks.texts[{index}]", text.x, text.y, 0, 0, text.units, self.canvas)
        if self.watermarks.timestamp is not None:
            ts = self.watermarks.timestamp
            check_inside("watermarks.timestamp", ts.x, ts.y, 0, 0, ts.units, self.canvas)
        if self.template == "custom" and not self.regions:
            raise ValueError("template 'custom' needs at least one region")
        if self.template != "custom" and self.regions:
            raise RegionsNeedCustom("regions", f"regions are used only with template 'custom', not "
                                               f"{self.template!r}: set template to 'custom' or drop the regions")
        return self


class OutsideCanvas(ValueError):
    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


class RegionsNeedCustom(OutsideCanvas):
    """Regions given with a template that ignores them."""


def check_inside(where: str, x: float, y: float, w: float, h: float, units: str, canvas: Canvas) -> None:
    """Raise when a rectangle leaves the canvas: a 400 naming it, never a silent crop."""
    if units == "fraction":
        cw, ch, eps = 1.0, 1.0, 1e-6
    else:
        cw, ch, eps = float(canvas.width), float(canvas.height), 0.0
    if x + w > cw + eps or y + h > ch + eps or (w == 0 and x >= cw) or (h == 0 and y >= ch):
        unit = "" if units == "fraction" else " px"
        raise OutsideCanvas(where, f"rectangle x={x:g} y={y:g} w={w:g} h={h:g} leaves the "
                                   f"{cw:g}x{ch:g}{unit} canvas")
