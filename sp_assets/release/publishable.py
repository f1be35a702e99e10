"""Every image the export writes passes through here: pixels go out, what the file says about people does not.

Intake stores sources clean (``sp_assets.core.image_clean``), but a data root made by an older version may
still hold files with EXIF (GPS, camera serial), comments, text chunks, XMP or an ICC profile, and edits
come from editors we do not control. A clean file is published byte for byte, so the export stays
reproducible and matches the stored sha256; any other is re-encoded clean (upright, sRGB, one frame, PNG)
and recorded, so the manifest and the datasheet can say how many were cleaned here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from PIL import Image

from sp_assets.core.hashing import sha256_bytes
from sp_assets.core.image_clean import Cleaned, MultiFrame, clean_image, container_is_clean


class Unpublishable(ValueError):
    """The bytes cannot be made into one clean picture (several frames, or not decodable)."""


def cleaned(data: bytes) -> Cleaned | None:
    """None when ``data`` is publishable as it is; else the clean re-encoding and what it removed."""
    if container_is_clean(data):
        return None
    try:
        return clean_image(data)
    except MultiFrame as exc:
        raise Unpublishable(f"it holds {exc.frames} frames ({exc.kind}), and a published image is one picture") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        # Pillow reports a file it cannot decode with any of these, by format.
        raise Unpublishable(f"it cannot be decoded to remove its metadata ({type(exc).__name__}: {exc})") from exc


def publishable_bytes(data: bytes) -> bytes:
    """``data`` if it holds only pixels, else its clean re-encoding (raises ``Unpublishable``)."""
    result = cleaned(data)
    return data if result is None else result.data


@dataclass(frozen=True)
class CleanedAtExport:
    """One stored image the export re-encoded: its hash as stored, as published, and what was removed."""

    stored_sha256: str
    published_sha256: str
    suffix: str
    removed: tuple[str, ...]

    @property
    def name(self) -> str:
        """Its file name in the export (named by the published bytes, as every exported image is)."""
        return f"{self.published_sha256}{self.suffix}"

    def as_dict(self) -> dict[str, object]:
        return {"published_sha256": self.published_sha256, "removed": list(self.removed)}


def record(stored_sha256: str, result: Cleaned) -> CleanedAtExport:
    # A re-encoding is always a PNG (clean_image keeps other formats only when nothing was removed).
    return CleanedAtExport(stored_sha256, sha256_bytes(result.data), f".{result.format.lower()}", result.removed)


def removed_counts(records: "list[CleanedAtExport] | tuple[CleanedAtExport, ...]") -> dict[str, int]:
    """Kind of metadata -> images it was removed from, sorted by kind."""
    return dict(sorted(Counter(kind for r in records for kind in r.removed).items()))
