"""Fonts for rendering scene text (the demo pool, the text-region editor), from files inside installed packages."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from PIL import ImageFont

DEFAULT_FONT = "DejaVuSans-Bold.ttf"


def font_path(name: str = DEFAULT_FONT) -> Path:
    """A font file that ships with matplotlib (the DejaVu family), so every machine renders the same
    glyphs without a system font or a download."""
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    if not path.is_file():
        raise FileNotFoundError(
            f"font {name!r} not found at {path}; reinstall matplotlib (it ships the DejaVu fonts)."
        )
    return path


@lru_cache(maxsize=256)
def load_font(size: int, name: str = DEFAULT_FONT) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(str(font_path(name)), size=max(6, int(size)))
