"""Read a folder of the user's images, with an optional manifest, and check every file before use.

Each file either becomes an accepted image or a rejection with a reason code and a detail that
names the file and the fix; nothing is dropped silently. Files are read one at a time.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import polars as pl
from PIL import Image, UnidentifiedImageError

from sp_assets.backends.base import ModelInfo, Source, SourceItem, SourceOptions
from sp_assets.core.policy import Category, Policy

MANIFEST_SUFFIXES = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}
_CATEGORY_ID_RE = re.compile(r"^\s*([A-Za-z]+\d+)\b")
FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}


class ManifestError(ValueError):
    """A manifest that cannot be read at all (as opposed to a bad row, which is rejected)."""


@dataclass
class Entry:
    """One candidate file: where it came from and what the manifest said about it."""

    ref: str  # path relative to the source folder, as written in the manifest or found on disk
    row: int | None = None  # manifest row (1-based, header excluded), None when walking the folder
    rating: str | None = None
    category: str | None = None  # raw category text from the manifest
    rationale: str | None = None
    photo: str | None = None  # the underlying photograph, when several images are edits or crops of one
    categories: list[str] | None = None  # resolved slugs, None = every category


@dataclass
class Checked:
    entry: Entry
    data: bytes | None = None
    format: str = ""
    width: int = 0
    height: int = 0
    reason: str = ""  # empty when accepted
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.reason


def read_manifest(path: Path) -> pl.DataFrame:
    kind = MANIFEST_SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ManifestError(
            f"{path}: manifest type {path.suffix!r} is not supported; use .csv, .jsonl or .parquet."
        )
    if not path.is_file():
        raise ManifestError(f"{path}: manifest not found; fix SP_MANIFEST or the 'manifest' setting.")
    try:
        if kind == "csv":
            frame = pl.read_csv(path, infer_schema=False)
        elif kind == "jsonl":
            frame = pl.read_ndjson(path, infer_schema_length=None)
        else:
            frame = pl.read_parquet(path)
    except Exception as exc:  # polars raises several error types for malformed files
        raise ManifestError(f"{path}: could not read the manifest ({exc}); check that it is valid {kind}.") from exc
    columns = {c.lower(): c for c in frame.columns}
    if "path" not in columns:
        raise ManifestError(
            f"{path}: manifest has no 'path' column (columns: {', '.join(frame.columns)}); "
            "add one with image paths relative to the source folder."
        )
    return frame.rename({v: k for k, v in columns.items()})


def _text(value: Any) -> str | None:
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def resolve_category(raw: str | None, policy: Policy) -> list[str] | None:
    """Manifest or folder category text -> slugs. None means 'judge under every category'.

    Accepts a slug (o2_violence), an id (O2) or a LlavaGuard-style label ('O2: Violence, ...').
    'NA' and empty values mean no category. Raises KeyError for anything else.
    """
    if raw is None or raw.strip().upper() in {"", "NA", "N/A", "NONE", "NA: NONE APPLYING"}:
        return None
    try:
        return [policy.category(raw).slug]
    except KeyError:
        match = _CATEGORY_ID_RE.match(raw)
        if match:
            return [policy.category(match.group(1)).slug]
        raise


def iter_entries(source_dir: Path, manifest: Path | None, policy: Policy) -> Iterator[Entry | Checked]:
    """Entries to check. A manifest row that names an unknown category comes back as a rejection."""
    if manifest is not None:
        frame = read_manifest(manifest)
        for i, row in enumerate(frame.iter_rows(named=True), start=1):
            entry = Entry(
                ref=_text(row.get("path")) or "",
                row=i,
                rating=_text(row.get("rating")),
                category=_text(row.get("category")),
                rationale=_text(row.get("rationale")),
                photo=_text(row.get("photo")),
            )
            if not entry.ref:
                yield Checked(entry, reason="missing_path", detail=f"{manifest}: row {i} has an empty 'path'; fill it in or drop the row.")
                continue
            try:
                entry.categories = resolve_category(entry.category, policy)
            except KeyError:
                yield Checked(
                    entry,
                    reason="unknown_category",
                    detail=f"{manifest}: row {i} ({entry.ref}) has category {entry.category!r}, which is not in "
                    f"policy {policy.name!r}; use one of {', '.join(policy.slugs)} or an id such as "
                    f"{policy.categories[0].id}.",
                )
                continue
            yield entry
        return
    for path in sorted(source_dir.rglob("*")):
        rel = path.relative_to(source_dir)
        if not path.is_file() or any(part.startswith(".") for part in rel.parts):
            continue
        categories = None
        if len(rel.parts) > 1:
            try:
                categories = [policy.category(rel.parts[0]).slug]
            except KeyError:
                categories = None
        yield Entry(ref=rel.as_posix(), categories=categories)


def check_file(entry: Entry, source_dir: Path, max_pixels: int, max_bytes: int) -> Checked:
    where = f"{entry.ref}" + (f" (manifest row {entry.row})" if entry.row else "")
    candidate = Path(entry.ref)
    full = (source_dir / candidate).resolve() if not candidate.is_absolute() else candidate.resolve()
    if not full.is_relative_to(source_dir):
        return Checked(entry, reason="path_escapes_root",
                       detail=f"{where}: resolves to {full}, outside the source folder {source_dir}; "
                       "give paths relative to the source folder, without '..'.")
    if not full.is_file():
        return Checked(entry, reason="missing", detail=f"{where}: no such file under {source_dir}; fix the path or add the file.")
    size = full.stat().st_size
    if size > max_bytes:
        return Checked(entry, reason="too_large",
                       detail=f"{where}: {size} bytes is over the limit of {max_bytes}; shrink it or raise max_file_bytes.")
    data = full.read_bytes()
    checked = Checked(entry, data=data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(full) as im:
                checked.format = im.format or ""
                checked.width, checked.height = im.size
                if im.size[0] * im.size[1] > max_pixels:
                    checked.reason = "too_many_pixels"
                    checked.detail = (f"{where}: {im.size[0]}x{im.size[1]} is over the limit of {max_pixels} "
                                      "pixels; downscale it or raise max_image_pixels.")
                    return checked
                im.load()
                if getattr(im, "n_frames", 1) > 1:
                    checked.extra["frames"] = im.n_frames
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        checked.reason = "too_many_pixels"
        checked.detail = f"{where}: the image is too large to decode safely; downscale it."
    except UnidentifiedImageError:
        checked.reason = "not_an_image"
        checked.detail = f"{where}: not a readable image (Pillow does not recognise it); remove it or convert it to PNG or JPEG."
    except OSError as exc:
        truncated = "truncated" in str(exc).lower()
        checked.reason = "truncated" if truncated else "corrupt"
        checked.detail = f"{where}: {'the file ends early' if truncated else 'the image data is damaged'} ({exc}); re-export or re-download it."
    except Exception as exc:  # noqa: BLE001 - any decoder failure quarantines the file, the batch goes on
        checked.reason = "corrupt"
        checked.detail = f"{where}: could not decode ({type(exc).__name__}: {exc}); re-export it."
    return checked


class FolderSource(Source):
    """Your images: a folder, with a manifest (CSV, JSONL, Parquet) or category subfolders."""

    origin = "folder"

    def __init__(self, policy: Policy):
        self.policy = policy
        self.info = ModelInfo(model_id="folder", revision="", device="none")

    def fingerprint(self, category: Category, options: SourceOptions) -> Any:
        """Name, size and modification time of every file under the folder, and of the manifest."""
        root, manifest = _folder_paths(options)
        files = [(p.relative_to(root).as_posix(), *_stat(p)) for p in sorted(root.rglob("*")) if p.is_file()]
        return {"category": category.slug, "files": files, "manifest": _stat(manifest) if manifest else None,
                "policy": options.policy.sha256}

    def scan(self, category: Category, options: SourceOptions) -> Iterator[SourceItem]:
        root, manifest = _folder_paths(options)
        for item in iter_entries(root, manifest, options.policy):
            entry = item.entry if isinstance(item, Checked) else item
            if entry.categories is not None and category.slug not in entry.categories:
                continue
            checked = item if isinstance(item, Checked) else check_file(
                item, root, options.max_image_pixels, options.max_file_bytes)
            yield SourceItem(
                ref=entry.ref, data=checked.data, suffix=FORMAT_SUFFIX.get(checked.format, ".img"),
                width=checked.width, height=checked.height, format=checked.format,
                reason=None if checked.ok else checked.reason, detail=checked.detail,
                columns={"manifest_rating": entry.rating, "manifest_category": entry.category,
                         "manifest_rationale": entry.rationale,
                         "photo_id": f"photo:{entry.photo}" if entry.photo else None})


def _stat(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_size, st.st_mtime_ns


def _folder_paths(options: SourceOptions) -> tuple[Path, Path | None]:
    if not options.source_dir:
        raise ValueError("source 'folder' needs source_dir (env SP_SOURCE_DIR): the folder that holds your images.")
    root = Path(options.source_dir).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"source_dir {root} is not a folder; fix SP_SOURCE_DIR or the 'source_dir' setting.")
    manifest = Path(options.manifest).expanduser().resolve() if options.manifest else None
    return root, manifest
