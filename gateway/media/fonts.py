"""Font lookup for text and timestamp watermarks.

The default is Noto Sans CJK (Debian ``fonts-noto-cjk``) because room names and captions are
often Chinese or Japanese; a Latin-only font would draw them as empty boxes ("tofu"). Lookups
are cached: they run once per layout change, never per frame, but fc-match forks a process.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess

import structlog
from PIL import ImageFont

log = structlog.get_logger(__name__)

_NOTO_CJK_FILES = (
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",  # Debian, Ubuntu
    "/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc",  # Arch
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",  # Fedora
)
_WQY_FILES = (
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
)
_DEJAVU_FILES = ("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf")

# (known files, fontconfig family): tried in order, best CJK coverage first
_FALLBACKS = (
    (_NOTO_CJK_FILES, "Noto Sans CJK SC"),
    (_WQY_FILES, "WenQuanYi Zen Hei"),
    (_WQY_FILES, "WenQuanYi Micro Hei"),
    (_DEJAVU_FILES, "DejaVu Sans"),
)
_FONT_SUFFIXES = (".ttf", ".otf", ".ttc", ".otc", ".pfb", ".woff", ".woff2")
# the vendor API's only font value; fontconfig knows no such family, it means our default
_DEFAULT_ALIASES = {"notosanscjk"}


class FontNotFoundError(FileNotFoundError):
    pass


def find_font(configured: str = "", family_hint: str | None = None) -> str:
    """The font file to use: see :func:`find_font_face` (this drops the face index)."""
    return find_font_face(configured, family_hint)[0]


@functools.lru_cache(maxsize=64)
def find_font_face(configured: str = "", family_hint: str | None = None) -> tuple[str, int]:
    """(font file, face index within a .ttc collection).

    ``family_hint`` is a watermark's ``font``: a file path (must exist) or a family name
    resolved with fc-match. A family fc-match does not really have (it answers with its
    default, e.g. DejaVu for the vendor spelling "NotoSansCJK") falls back to ``configured``
    (the node's ``media.font``, must exist when set), then Noto Sans CJK, WenQuanYi, DejaVu.
    """
    if family_hint and family_hint.strip():
        hint = family_hint.strip()
        if _looks_like_path(hint):
            if not os.path.isfile(hint):
                raise ValueError(f"font file {hint!r} does not exist")
            return hint, _preferred_face(hint)
        alias = _norm(hint) in _DEFAULT_ALIASES
        found = None if alias else _fc_match(hint)
        if found is not None:
            return found
        if not alias:
            log.info("font family not installed, using the default font", family=hint)
    if configured:
        if not os.path.isfile(configured):
            raise ValueError(f"configured font {configured!r} (media.font) does not exist")
        return configured, _preferred_face(configured)
    for files, family in _FALLBACKS:
        for path in files:
            if os.path.isfile(path):
                return path, _preferred_face(path)
        found = _fc_match(family)
        if found is not None:
            return found
    raise FontNotFoundError(
        "no font for text watermarks: install fonts-noto-cjk (or fonts-wqy-zenhei / fonts-dejavu-core) "
        "or set media.font to a .ttf/.otf/.ttc file"
    )


@functools.lru_cache(maxsize=128)
def load_font(path: str, size: int, index: int = 0) -> ImageFont.FreeTypeFont:
    """A Pillow font, cached so re-rendering a timestamp does not re-open a 20 MB collection."""
    return ImageFont.truetype(path, size, index=index)


def _looks_like_path(value: str) -> bool:
    return os.sep in value or value.lower().endswith(_FONT_SUFFIXES)


def _norm(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


def _fc_match(family: str) -> tuple[str, int] | None:
    """fc-match's answer for ``family``, or None when fc-match is missing or only has a substitute."""
    exe = shutil.which("fc-match")
    if exe is None:
        return None
    try:
        out = subprocess.run(
            [exe, "-f", "%{file}\n%{index}\n%{family}", family],
            capture_output=True, text=True, timeout=5, check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    path, index, families = ([*out.split("\n"), "", ""])[:3]
    wanted = _norm(family)
    # fc-match never fails: it returns its default font for unknown names, so check the family
    if not path or not os.path.isfile(path):
        return None
    if not any(_norm(name) == wanted for name in families.split(",")):
        return None
    return path, int(index) if index.isdigit() else 0


def _preferred_face(path: str) -> int:
    """In a CJK collection (.ttc) prefer the Simplified Chinese face, else the first one."""
    if not path.lower().endswith((".ttc", ".otc")):
        return 0
    for index in range(32):
        try:
            family = ImageFont.truetype(path, 12, index=index).getname()[0] or ""
        except OSError:
            break
        if family.endswith(" SC"):
            return index
    return 0
