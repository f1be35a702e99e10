"""Taking a source's items into the image store: accepted once by content, or quarantined with a reason."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable

from sp_assets.backends.base import SourceItem, SourceOptions
from sp_assets.core.hashing import sha256_bytes, sha256_json
from sp_assets.core.image_clean import MultiFrame, clean_image, container_is_clean
from sp_assets.core.policy import Category
from sp_assets.storage import ImageStore, Store, queries

# Part of every source's config hash: a change in how files are taken in takes every category in again.
INTAKE_VERSION = "display-clean-1"  # orientation applied, sRGB, one frame, no metadata (core.image_clean)


@dataclass
class Intake:
    """One category's source images: accepted rows, rejected rows, and how many items came in."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[dict[str, Any]] = field(default_factory=list)
    n_in: int = 0
    fingerprint: str = ""  # the source's fingerprint of what it offered

    def with_base(self, base: dict[str, Any]) -> "Intake":
        """The same rows with this run's columns (a kept intake was taken in by an earlier run)."""
        run = {k: base[k] for k in ("run_id", "created_at") if k in base}
        return Intake([{**r, **run} for r in self.accepted], [{**r, **run} for r in self.rejected], self.n_in,
                      self.fingerprint)


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



def intake_category(store: Store, images: ImageStore, source: Any, category: Category, options: SourceOptions,
                    base: dict[str, Any], config_sha256: str) -> tuple[Intake, bool]:
    """One category's intake, and whether it was kept from an earlier run.

    The source's ``fingerprint`` of what it would offer (cheap: names, sizes, times) is compared with the one
    stored when the category was last taken in under the same source settings; when they match and every
    stored file is still there, the stored rows are kept (with this run's columns), else the source is
    scanned and its files taken in again.
    """
    fingerprint = sha256_json(source.fingerprint(category, options))
    kept = _kept(store, images, category.slug, config_sha256, fingerprint)
    if kept is not None:
        return kept.with_base(base), True
    intake = take_in(source.scan(category, options), images, base, source.origin)
    intake.fingerprint = fingerprint
    return intake, False


def _kept(store: Store, images: ImageStore, category: str, config_sha256: str, fingerprint: str) -> Intake | None:
    last = queries.last_intake(store, category)
    if last is None or (last["source_config_sha256"], last["fingerprint"]) != (config_sha256, fingerprint):
        return None
    accepted, rejected = queries.sources_of(store, category), queries.rejections_of(store, category)
    files = [r["image_path"] for r in accepted] + [r["quarantine_path"] for r in rejected if r["quarantine_path"]]
    if not all(images.exists(f) for f in files):  # a stored file is gone: take the category in again
        return None
    strip = ("run_id", "created_at")
    return Intake([{k: v for k, v in r.items() if k not in strip} for r in accepted],
                  [{k: v for k, v in r.items() if k not in strip} for r in rejected], int(last["n_in"]), fingerprint)
