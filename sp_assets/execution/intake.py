"""Taking a source's items into the image store: accepted once by content, or quarantined with a reason."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from sp_assets.backends.base import SourceItem
from sp_assets.core.hashing import sha256_bytes
from sp_assets.storage import ImageStore


@dataclass
class Intake:
    """One category's source images: accepted rows, rejected rows, and how many items came in."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    n_in: int = 0

    def with_base(self, base: dict[str, Any]) -> "Intake":
        """The same rows with this run's columns (a reused intake was taken in by an earlier run)."""
        return Intake([{**r, **base} for r in self.accepted], [{**r, **base} for r in self.rejected], self.n_in)


def take_in(items: Iterable[SourceItem], images: ImageStore, base: dict[str, Any], origin: str) -> Intake:
    """Store every usable item by its hash; a refused item's bytes go to quarantine with its reason.

    ``base`` holds the columns every row shares (category, provenance). Duplicates of an image already
    taken in are rejected as 'duplicate' and point at the one kept.
    """
    out = Intake()
    seen: dict[str, str] = {}
    for item in items:
        out.n_in += 1
        if item.reason:
            out.rejected.append(_rejection(item, images, base, item.reason, item.detail))
            continue
        assert item.data is not None
        sha = sha256_bytes(item.data)
        if sha in seen:
            out.rejected.append(_rejection(item, images, base, "duplicate",
                                           f"{item.ref}: same bytes as {seen[sha]}; kept that one.", sha))
            continue
        sha, rel = images.put_bytes(item.data, item.suffix)
        seen[sha] = item.ref
        out.accepted.append({
            **base, "image_sha256": sha, "image_path": rel, "width": item.width, "height": item.height,
            "format": item.format, "n_bytes": len(item.data), "origin": origin, "origin_ref": item.ref, **item.columns,
            # A source with no known photograph is its own photograph.
            "photo_id": item.columns.get("photo_id") or sha})
    return out


def _rejection(item: SourceItem, images: ImageStore, base: dict[str, Any], reason: str, detail: str,
               duplicate_of: str | None = None) -> dict[str, Any]:
    quarantine = None
    if item.data is not None and reason != "duplicate":
        _, quarantine = images.put_bytes(item.data, ".bin", folder="quarantine")
    return {**{k: v for k, v in base.items() if k != "policy_sha256"}, "origin_ref": item.ref, "reason": reason,
            "detail": detail, "duplicate_of": duplicate_of, "quarantine_path": quarantine}
