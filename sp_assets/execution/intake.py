"""Taking a source's items into the image store: accepted once by content, or quarantined with a reason."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from sp_assets.backends.base import SourceItem, SourceOptions
from sp_assets.core.hashing import sha256_bytes
from sp_assets.core.image_clean import MultiFrame, clean_image, container_is_clean
from sp_assets.core.policy import Policy
from sp_assets.execution.memo import Call, Encoded
from sp_assets.execution.work import Rows
from sp_assets.storage import ImageStore

# Part of every source's config hash: a change in how files are taken in takes every category in again.
INTAKE_VERSION = "display-clean-1"  # orientation applied, sRGB, one frame, no metadata (core.image_clean)


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
    taken in are rejected as 'duplicate' and point at the one kept. Whatever the source, the stored image
    is the picture as seen, without metadata: a source that hands over a file with EXIF, an ICC profile
    or an orientation tag has it cleaned here (a folder source cleans while it checks).
    """
    out = Intake()
    seen: dict[str, str] = {}
    for item in items:
        out.n_in += 1
        if not item.reason:
            item = _cleaned(item)
        if item.reason:
            out.rejected.append(_rejection(item, images, base, item.reason, item.detail))
            continue
        assert item.data is not None
        sha = sha256_bytes(item.data)
        if sha in seen:
            out.rejected.append(_rejection(item, images, base, "duplicate",
                                           f"{item.ref}: same picture as {seen[sha]}; kept that one.", sha))
            continue
        sha, rel = images.put_bytes(item.data, item.suffix)
        seen[sha] = item.ref
        out.accepted.append({
            **base, "image_sha256": sha, "image_path": rel, "width": item.width, "height": item.height,
            "format": item.format, "n_bytes": len(item.data), "origin": origin, "origin_ref": item.ref,
            "original_sha256": sha, "metadata_removed": "", **item.columns,
            # A source with no known photograph is its own photograph.
            "photo_id": item.columns.get("photo_id") or sha})
    return out


def _cleaned(item: SourceItem) -> SourceItem:
    """The item with clean bytes (unchanged when they already are), or refused when they cannot be."""
    if item.data is None or "original_sha256" in item.columns or container_is_clean(item.data):
        return item
    try:
        clean = clean_image(item.data)
    except MultiFrame as exc:
        return replace(item, reason=exc.kind, detail=f"{item.ref}: {exc.frames} frames; store one frame as PNG or JPEG.")
    except Exception as exc:  # noqa: BLE001 - a file the decoder refuses is quarantined, the batch goes on
        return replace(item, reason="corrupt", detail=f"{item.ref}: could not decode ({type(exc).__name__}: {exc}).")
    columns = {**item.columns, "original_sha256": sha256_bytes(item.data), "original_format": item.format or clean.format,
               "metadata_removed": ",".join(clean.removed)}
    return replace(item, data=clean.data, suffix=".png" if clean.changed else item.suffix, width=clean.width,
                 height=clean.height, format=clean.format, columns=columns)


def _rejection(item: SourceItem, images: ImageStore, base: dict[str, Any], reason: str, detail: str,
               duplicate_of: str | None = None) -> dict[str, Any]:
    quarantine = None
    if item.data is not None and reason != "duplicate":
        _, quarantine = images.put_bytes(item.data, ".bin", folder="quarantine")
    return {**{k: v for k, v in base.items() if k != "policy_sha256"}, "origin_ref": item.ref, "reason": reason,
            "detail": detail, "duplicate_of": duplicate_of, "quarantine_path": quarantine}


RUN_COLUMNS = ("run_id", "created_at")  # filled in by the run that writes the rows, never stored in the memo


def source_call(config_sha256: str) -> Call:
    """One category's intake from a source, by the source's fingerprint of what it would offer."""
    def encode(intake: Intake) -> Encoded:
        strip = [[{k: v for k, v in r.items() if k not in RUN_COLUMNS} for r in rows]
                 for rows in (intake.accepted, intake.rejected)]
        files = [r["image_path"] for r in intake.accepted] + [r["quarantine_path"] for r in intake.rejected
                                                              if r.get("quarantine_path")]
        return Encoded(json.dumps({"accepted": strip[0], "rejected": strip[1], "n_in": intake.n_in}, sort_keys=True,
                                  default=str), files=tuple(files))

    def decode(text: str, _b: bytes | None) -> Intake:
        d = json.loads(text)
        return Intake(d["accepted"], d["rejected"], d["n_in"])

    return Call("source", config_sha256, lambda item: {"fingerprint": item["fingerprint"]}, encode, decode)


def take_in_category(source: Any, images: ImageStore, policy: Policy, batch: Rows, category: str,
                     options: SourceOptions, base: dict[str, Any]) -> list[Intake]:
    """A source's items for one category taken into the image store (or quarantined)."""
    return [take_in(source.scan(policy.category(category), options), images, base, source.origin) for _ in batch]
