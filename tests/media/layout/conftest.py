"""Fixtures for layout tests: the built-in templates and rooms of N camera sources."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gateway.media.layout.model import Layout
from gateway.media.layout.placed import PlacedRegion, VideoSource
from gateway.media.layout.resolve import resolve
from gateway.media.layout.templates import TemplateRegistry
from plugins.layouts import LayoutsPlugin

Rects = list[tuple[int, int, int, int]]


@pytest.fixture
def registry() -> TemplateRegistry:
    return TemplateRegistry(LayoutsPlugin().mediagate_layout_templates())


def cameras(count: int) -> list[VideoSource]:
    return [VideoSource(f"p{i}", name=f"Person {i}") for i in range(count)]


@pytest.fixture
def cams() -> Callable[[int], list[VideoSource]]:
    return cameras


@pytest.fixture
def place(registry: TemplateRegistry) -> Callable[..., list[PlacedRegion]]:
    """Resolve a template over sources: place("grid", sources, width=1280, height=720, ...)."""

    def run(template: str, sources: list[VideoSource], width: int = 1280, height: int = 720,
            active_speaker: str | None = None, **layout: object) -> list[PlacedRegion]:
        spec = Layout.model_validate({"canvas": {"width": width, "height": height}, "template": template,
                                      **layout})
        return resolve(spec, sources, registry, active_speaker=active_speaker)

    return run


@pytest.fixture
def rects() -> Callable[[list[PlacedRegion]], Rects]:
    return lambda placed: [(r.x, r.y, r.w, r.h) for r in placed]
