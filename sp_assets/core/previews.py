"""Small inline previews for the Dagster UI: markdown with base64 PNG thumbnails.

Unsafe images are blurred unless the run opts in (``preview_unsafe``): previews live in the event
log, where anyone who can open the UI sees them.
"""

from __future__ import annotations

from typing import Iterable

from PIL import Image

from sp_assets.core.encoding import image_data_uri

THUMB = 160


def thumbnail_uri(image: Image.Image, blur: bool) -> str:
    return image_data_uri(image, THUMB, blur=blur)


def pairs_markdown(pairs: Iterable[tuple[str, Image.Image, Image.Image, str]], show_unsafe: bool) -> str:
    """``pairs``: (title, unsafe image, safe image, caption). The unsafe half is blurred unless opted in."""
    lines = ["| unsafe (source) | safe (edit) | |", "|---|---|---|"]
    for title, unsafe, safe, caption in pairs:
        left = thumbnail_uri(unsafe, blur=not show_unsafe)
        right = thumbnail_uri(safe, blur=False)
        lines.append(f"| ![unsafe]({left}) | ![safe]({right}) | **{_cell(title)}**<br>{_cell(caption)} |")
    note = "" if show_unsafe else "\n\nUnsafe halves are blurred; set `preview_unsafe: true` in the settings resource to see them."
    return "\n".join(lines) + note


def _cell(text: str) -> str:
    return text.replace("|", "/").replace("\n", " ")
