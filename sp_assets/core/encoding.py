"""Images as ``data:`` URIs, for previews in the Dagster UI, figures in metadata and self-contained pages."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image, ImageFilter


def png_bytes(image: Image.Image) -> bytes:
    """Deterministic PNG encoding: no metadata, fixed compression, so equal pixels give equal bytes.

    Pillow writes an ``icc_profile`` left in ``image.info`` unless told not to: an image derived from a
    source would carry the source's profile (and, with it, who made it) into every edit."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", optimize=False, compress_level=6, icc_profile=None)
    return buf.getvalue()


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64," + base64.b64encode(data).decode("ascii")


def file_data_uri(path: str | Path, mime: str = "image/png") -> str:
    return data_uri(Path(path).read_bytes(), mime)


def image_data_uri(image: Image.Image, max_side: int, fmt: str = "PNG", blur: bool = False,
                   quality: int = 85) -> str:
    """A downscaled copy of ``image`` (longest side ``max_side``), blurred if asked, as a data URI."""
    im = image.convert("RGB").copy()
    im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS if fmt == "JPEG" else Image.Resampling.BICUBIC)
    if blur:
        im = im.filter(ImageFilter.GaussianBlur(radius=max(4, im.width // 16)))
    buf = io.BytesIO()
    if fmt == "JPEG":
        im.save(buf, format="JPEG", quality=quality, optimize=True)
        return data_uri(buf.getvalue(), "image/jpeg")
    im.save(buf, format="PNG", optimize=True)
    return data_uri(buf.getvalue(), "image/png")
