"""An image as people see it, without what its file says about who took it.

A phone photo is stored sideways with an EXIF Orientation tag, carries GPS coordinates, the camera's make
and serial number, comments, XMP and an ICC colour profile. The benchmark is made to be published, so
intake keeps the picture and drops the rest: orientation applied, colours converted to sRGB, one frame,
no metadata. A file that already holds nothing but pixels (the common PNG or JPEG with no ancillary
data) is kept byte for byte; anything else is re-encoded as a deterministic PNG. ``removed`` says what
was taken out, for the datasheet.
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass

from PIL import Image, ImageCms, ImageOps

from sp_assets.core.encoding import png_bytes

__all__ = ["Cleaned", "MultiFrame", "clean_image", "container_is_clean", "metadata_kinds"]

# PNG chunks that say nothing about the owner: pixels, palette, transparency and how to display them.
_PNG_CHUNKS = frozenset({b"IHDR", b"PLTE", b"IDAT", b"IEND", b"tRNS", b"gAMA", b"cHRM", b"sRGB", b"pHYs", b"bKGD",
                         b"sBIT"})
# JPEG markers before the scan that carry only what decoding needs: APP0 (JFIF), APP14 (Adobe colour
# transform), tables, frame headers, restart interval. APP1 (EXIF, XMP), APP2 (ICC, MPF), APP13 (IPTC)
# and COM (comments) are what a camera or an editor adds about the picture and its owner.
_JPEG_MARKERS = frozenset({0xE0, 0xEE, 0xDB, 0xC4, 0xDD, 0xCC} | set(range(0xC0, 0xC4)) | set(range(0xC5, 0xC8))
                          | set(range(0xC9, 0xCC)) | set(range(0xCD, 0xD0)))
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# EXIF tags that identify a camera or a person (TIFF/EXIF tag numbers).
_GPS_IFD = 0x8825
_IDENTIFYING_TAGS = {0x010F: "camera", 0x0110: "camera", 0xA431: "camera", 0xA434: "camera", 0xA435: "camera",
                     0x013B: "author", 0x8298: "author", 0x9C9D: "author", 0xA430: "author", 0x0131: "software"}
_ORIENTATION = 0x0112
# Formats whose animation would be played by a viewer while the judge sees frame 0.
_ANIMATED_FORMATS = frozenset({"GIF", "PNG", "WEBP", "APNG", "FLI", "FLC"})


class MultiFrame(ValueError):
    """The file holds several pictures (an animation, a multi-page scan); ``kind`` says which."""

    def __init__(self, kind: str, frames: int):
        self.kind, self.frames = kind, frames
        super().__init__(f"{kind} with {frames} frames")


@dataclass(frozen=True)
class Cleaned:
    """The bytes to store and what was taken out of the original to get them."""

    data: bytes
    format: str
    width: int
    height: int
    removed: tuple[str, ...] = ()  # e.g. ('exif', 'gps', 'camera', 'orientation', 'icc_to_srgb', 'comment')

    @property
    def changed(self) -> bool:
        return bool(self.removed)


def container_is_clean(data: bytes) -> bool:
    """True when ``data`` is a PNG or JPEG file holding pixels and decoding tables only (no metadata)."""
    if data.startswith(_PNG_SIGNATURE):
        return _png_chunks_clean(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_markers_clean(data)
    return False


def _png_chunks_clean(data: bytes) -> bool:
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind not in _PNG_CHUNKS:
            return False
        if kind == b"IEND":
            return True
        pos += 12 + length
    return False  # no IEND: truncated, let the decoder say so


def _jpeg_markers_clean(data: bytes) -> bool:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return False
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: nothing after it but entropy-coded data and restart markers
            return True
        if marker not in _JPEG_MARKERS:
            return False
        if marker == 0xE0 and not data[pos + 4:pos + 9].startswith(b"JFIF"):
            return False  # APP0 other than JFIF (a JFXX thumbnail)
        pos += 2 + struct.unpack(">H", data[pos + 2:pos + 4])[0]
    return False


def metadata_kinds(im: Image.Image) -> list[str]:
    """What an opened image carries besides its pixels, by kind, in a fixed order."""
    kinds: list[str] = []
    exif = im.getexif()
    if len(exif) or im.info.get("exif"):
        kinds.append("exif")
        if _GPS_IFD in exif:
            kinds.append("gps")
        kinds += sorted({_IDENTIFYING_TAGS[tag] for tag in exif if tag in _IDENTIFYING_TAGS})
        if exif.get(_ORIENTATION, 1) not in (1, None):
            kinds.append("orientation")
    if im.info.get("icc_profile"):
        kinds.append("icc_to_srgb")
    if im.info.get("comment"):
        kinds.append("comment")
    if im.info.get("xmp") or im.info.get("XML:com.adobe.xmp"):
        kinds.append("xmp")
    if im.info.get("photoshop"):
        kinds.append("iptc")
    text = getattr(im, "text", None) or {}
    if any(key != "XML:com.adobe.xmp" for key in text):
        kinds.append("text")
    return kinds


def clean_image(data: bytes) -> Cleaned:
    """``data`` as the picture it shows: upright, sRGB, one frame, no metadata.

    Raises ``MultiFrame`` for an animation or a multi-page file (which frame would be "the" image?), and
    whatever Pillow raises for a file it cannot decode. The primary image of a multi-picture JPEG (MPO,
    as some phones write, with a depth map or preview as the second picture) is taken, and the rest
    counted as removed.
    """
    with Image.open(io.BytesIO(data)) as im:
        frames = getattr(im, "n_frames", 1)
        if frames > 1 and im.format != "MPO":
            kind = "animated" if im.format in _ANIMATED_FORMATS else "multi_page"
            raise MultiFrame(kind, frames)
        if container_is_clean(data):
            im.load()
            return Cleaned(data, im.format or "", im.width, im.height)
        removed = metadata_kinds(im) + (["extra_frames"] if frames > 1 else [])
        out, icc_used = _display_pixels(im)
    if "icc_to_srgb" in removed and not icc_used:
        removed[removed.index("icc_to_srgb")] = "icc_unreadable"  # dropped: it could not be applied
    return Cleaned(png_bytes(out), "PNG", out.width, out.height, tuple(removed or ["other"]))


def _display_pixels(im: Image.Image) -> tuple[Image.Image, bool]:
    """The first frame, turned upright and in sRGB, with no info left on it; and whether its ICC profile
    was applied."""
    im.seek(0)
    upright = ImageOps.exif_transpose(im)
    has_alpha = upright.mode in ("RGBA", "LA", "PA") or (upright.mode == "P" and "transparency" in upright.info)
    mode = "RGBA" if has_alpha else "RGB"
    icc = upright.info.get("icc_profile")
    out = converted = _to_srgb(upright, icc, mode) if icc else None
    if out is None:
        out = upright.convert(mode) if upright.mode != mode else upright.copy()
    out.info = {}
    return out, bool(icc) and converted is not None


def _to_srgb(im: Image.Image, icc: bytes, mode: str) -> Image.Image | None:
    """Pixels converted from the embedded profile to sRGB; None when the profile cannot be used."""
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        base = im if im.mode in ("RGB", "RGBA", "CMYK", "L") else im.convert(mode)
        converted = ImageCms.profileToProfile(base, source, ImageCms.createProfile("sRGB"), outputMode=mode)
    except (ImageCms.PyCMSError, OSError, ValueError):
        return None
    return converted
