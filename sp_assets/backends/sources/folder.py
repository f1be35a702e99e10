"""Read a folder of the user's images, with an optional manifest, and check every file before use.

Each file either becomes an accepted image or a rejection with a reason code and a detail that
names the file and the fix; so does each manifest row that cannot be read. Files that are not images
(the manifest, notes) are skipped and images no manifest row names are left out, and both are counted
(``FolderSource.intake_notes``): nothing is dropped silently. Files are read one at a time.
"""

from __future__ import annotations

import errno
import io
import json
import os
import re
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterator, Sequence

from PIL import Image, UnidentifiedImageError

from sp_assets.backends.base import Source, SourceItem, SourceOptions

from sp_assets.core.record_types import ModelInfo
from sp_assets.backends.sources.manifest import ManifestError, ManifestRow, read_rows
from sp_assets.core.hashing import sha256_bytes
from sp_assets.core.image_clean import MultiFrame, clean_image
from sp_assets.core.policy import Category, Policy
from sp_assets.backends.profiles import ProfileParams

__all__ = ["FolderSource", "ManifestError", "check_file", "iter_entries", "list_folder", "resolve_category"]

_CATEGORY_ID_RE = re.compile(r"^\s*([A-Za-z]+\d+)\b")
FORMAT_SUFFIX = {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp", "TIFF": ".tif"}
# Files that sit beside images (manifests, notes, settings) are skipped and counted, never judged.
SKIPPED_SUFFIXES = frozenset({".json", ".jsonl", ".ndjson", ".csv", ".tsv", ".txt", ".md", ".parquet", ".yaml",
                              ".yml"})
SKIPPED_NAMES = frozenset({"thumbs.db", "desktop.ini"})
EXAMPLES = 5  # file names shown with a count


@dataclass
class Entry:
    """One candidate file: where it came from and what the manifest said about it."""

    ref: str  # path relative to the source folder, as written in the manifest or found on disk
    at: str | None = None  # the manifest and its line ("manifest.csv line 5"), None when walking the folder
    rating: str | None = None
    category: str | None = None  # raw category text from the manifest
    rationale: str | None = None
    photo: str | None = None  # the underlying photograph, when several images are edits or crops of one
    categories: list[str] | None = None  # resolved slugs, None = every category
    variant_ratings: dict[str, str] = field(default_factory=dict)  # variant policy name -> human label


@dataclass
class Checked:
    entry: Entry
    data: bytes | None = None  # the file as read (quarantined with a rejection)
    stored: bytes | None = None  # what is stored when accepted: the file as seen, without metadata
    format: str = ""
    width: int = 0
    height: int = 0
    reason: str = ""  # empty when accepted
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.reason


@dataclass
class Listing:
    """The files under a source folder: those to check as images, and those skipped (not images)."""

    candidates: list[str] = field(default_factory=list)  # paths relative to the folder, in path order
    skipped: list[str] = field(default_factory=list)  # non-image and hidden files; a hidden folder ends in '/'


def list_folder(root: Path) -> Listing:
    out = Listing()

    def unreadable(exc: OSError) -> None:  # a folder os.walk cannot list is counted, not passed over
        name = Path(exc.filename or "?")
        out.skipped.append((name.relative_to(root) if name.is_relative_to(root) else name).as_posix() + "/")

    for dirpath, dirnames, filenames in os.walk(root, onerror=unreadable):
        here = Path(dirpath).relative_to(root)
        # A hidden folder (.git, .cache) is counted once, not walked.
        out.skipped += [(here / d).as_posix() + "/" for d in dirnames if d.startswith(".")]
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            skip = name.startswith(".") or name.lower() in SKIPPED_NAMES or Path(name).suffix.lower() in SKIPPED_SUFFIXES
            (out.skipped if skip else out.candidates).append((here / name).as_posix())
    out.candidates.sort(key=lambda rel: rel.split("/"))
    out.skipped.sort(key=lambda rel: rel.split("/"))
    return out


def folder_category(rel: str, policy: Policy) -> list[str] | None:
    """The category a file's top folder names (``o2_violence/a.png``, ``O6/b.png``); None for every category."""
    parts = PurePosixPath(rel).parts
    if len(parts) < 2:
        return None
    try:
        return [policy.category(parts[0]).slug]
    except KeyError:
        return None


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
    """Entries to check. A manifest row that cannot be read or names an unknown category comes back as a
    rejection; without a manifest, every file of the folder that may be an image is an entry."""
    if manifest is None:
        for rel in list_folder(source_dir).candidates:
            yield Entry(ref=rel, categories=folder_category(rel, policy))
        return
    for row in read_rows(manifest):
        if row.problem:
            yield _bad_row(manifest, row, policy)
            continue
        v = row.values
        entry = Entry(ref=v["path"], at=f"{manifest.name} {row.at}", rating=v["rating"], category=v["category"],
                      rationale=v["rationale"], photo=v["photo"], variant_ratings=v.get("variant_ratings") or {})
        try:
            entry.categories = resolve_category(entry.category, policy)
        except KeyError:
            yield Checked(
                entry,
                reason="unknown_category",
                detail=f"{manifest}: {row.at} ({entry.ref}) has category {entry.category!r}, which is not in "
                f"policy {policy.name!r}; use one of {', '.join(policy.slugs)} or an id such as "
                f"{policy.categories[0].id}.",
            )
            continue
        yield entry


def _bad_row(manifest: Path, row: ManifestRow, policy: Policy) -> Checked:
    """A manifest row that cannot be used, as a rejection with reason 'bad_manifest_row'.

    It is counted under the category it names when that can still be read, and otherwise under every
    category the source serves (as a row without a category would be): each partition that may have
    taken the row in shows it as rejected, so in = accepted + rejected holds in every one.
    """
    path, category = row.values.get("path"), row.values.get("category")
    ref = path.strip() if isinstance(path, str) and path.strip() else f"{manifest.name} {row.at}"
    entry = Entry(ref=ref, at=f"{manifest.name} {row.at}")
    if isinstance(category, str):
        try:
            entry.categories = resolve_category(category, policy)
        except KeyError:
            entry.categories = None
    return Checked(entry, reason="bad_manifest_row", detail=f"{manifest}: {row.at} {row.problem}")


def manifest_refs(manifest: Path) -> set[str]:
    """The paths a manifest names, bad rows included (a rejected row still lists its file)."""
    paths = (row.values.get("path") for row in read_rows(manifest))
    return {p.strip() for p in paths if isinstance(p, str) and p.strip()}


def printable(text: str) -> str:
    """A path as it can be stored and shown: bytes that are not UTF-8 (a file name from another system)
    and NUL written as escapes, so one odd name never stops a row from being committed."""
    try:
        raw = text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a lone surrogate from a JSON escape
        raw = text.encode("utf-8", "backslashreplace")
    return raw.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def _refused(entry: Entry, reason: str, detail: str) -> Checked:
    return Checked(entry, reason=reason, detail=detail)


def check_file(entry: Entry, source_dir: Path, max_pixels: int, max_bytes: int) -> Checked:
    """One file read once and checked: the bytes decoded are the bytes stored.

    Every way a file can fail (a name that is not UTF-8, a path that leaves the folder or cannot exist, a
    symlink loop, a FIFO or device, no permission, a file that grows or shrinks while it is read, an
    animation, damaged or oversized image data) becomes a rejection with a reason and a fix.
    """
    where = printable(entry.ref) + (f" ({entry.at})" if entry.at else "")
    if printable(entry.ref) != entry.ref:
        reason = "bad_path" if entry.at else "bad_file_name"
        return _refused(entry, reason, f"{where}: the {'path' if entry.at else 'file name'} holds bytes that are "
                        "not UTF-8 text (or a NUL); rename the file with a UTF-8 name"
                        + (" and write that name in the manifest." if entry.at else "."))
    full, reason, problem = _resolve(entry.ref, source_dir)
    if full is None:
        return _refused(entry, reason, f"{where}: {problem}")
    if not full.is_relative_to(source_dir):
        return _refused(entry, "path_escapes_root",
                        f"{where}: resolves to {full}, outside the source folder {source_dir}; "
                        "give paths relative to the source folder, without '..'.")
    data, refusal = _read_once(full, where, source_dir, max_bytes)
    if refusal is not None:
        return Checked(entry, reason=refusal[0], detail=refusal[1])
    assert data is not None
    return _decoded(Checked(entry, data=data), where, max_pixels)


def _resolve(ref: str, source_dir: Path) -> tuple[Path | None, str, str]:
    """The absolute path a reference names, or (None, reason, what is wrong and the fix)."""
    candidate = Path(ref)
    try:
        full = (source_dir / candidate).resolve() if not candidate.is_absolute() else candidate.resolve()
    except RuntimeError:  # Path.resolve on a symlink loop (Python 3.11)
        return None, "symlink_loop", "is a symlink loop (a link that leads back to itself); remove the link or point it at the image."
    except ValueError as exc:  # an embedded NUL
        return None, "bad_path", f"is not a usable path ({exc}); fix the path in the manifest."
    except OSError as exc:
        return None, "bad_path", f"cannot be resolved ({exc.strerror or exc}); fix the path or the link."
    return full, "", ""


def _read_once(full: Path, where: str, source_dir: Path, max_bytes: int) -> tuple[bytes | None, tuple[str, str] | None]:
    """The file's bytes, read through one descriptor; or (reason, detail) when it cannot be used.

    Opened without blocking, so a FIFO never hangs the step, and checked through that descriptor, so the
    file checked is the file read.
    """
    try:
        fd = os.open(full, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, ("missing", f"{where}: no such file under {source_dir}; fix the path or add the file.")
    except PermissionError:
        return None, ("unreadable", f"{where}: permission denied; let this user read it (chmod a+r) or remove it.")
    except OSError as exc:
        reason = {errno.ELOOP: "symlink_loop", errno.ENAMETOOLONG: "bad_path"}.get(exc.errno or 0, "unreadable")
        return None, (reason, f"{where}: cannot be opened ({exc.strerror or exc}); fix the path or the file.")
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            kind = _file_kind(st.st_mode)
            return None, ("not_a_file", f"{where}: is a {kind}, not a regular file; only image files are read. "
                          "Move it out of the source folder.")
        if st.st_size > max_bytes:
            return None, ("too_large", f"{where}: {st.st_size} bytes is over the limit of {max_bytes}; shrink it or "
                          "raise max_file_bytes.")
        try:
            data = fh.read(max_bytes + 1)
        except OSError as exc:
            return None, ("unreadable", f"{where}: reading failed ({exc.strerror or exc}); copy the file again.")
        after = os.fstat(fh.fileno())
    if len(data) > max_bytes:
        return None, ("too_large", f"{where}: grew past the limit of {max_bytes} bytes while it was read; shrink it "
                      "or raise max_file_bytes.")
    if len(data) != st.st_size or after.st_size != st.st_size or after.st_mtime_ns != st.st_mtime_ns:
        return None, ("changed_while_read", f"{where}: the file changed while it was read ({st.st_size} bytes, "
                      f"then {len(data)} read); run again once it has been written completely.")
    return data, None


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO (named pipe)"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _decoded(checked: Checked, where: str, max_pixels: int) -> Checked:
    """The bytes decoded in full and stored as they are seen (upright, sRGB, one frame, no metadata)."""
    data = checked.data
    assert data is not None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:  # the header only: the size before any decoding
                checked.format = im.format or ""
                checked.width, checked.height = im.size
            if checked.width * checked.height > max_pixels:
                checked.reason = "too_many_pixels"
                checked.detail = (f"{where}: {checked.width}x{checked.height} is over the limit of {max_pixels} "
                                  "pixels; downscale it or raise max_image_pixels.")
                return checked
            clean = clean_image(data)
    except MultiFrame as exc:
        checked.reason = exc.kind
        checked.detail = (f"{where}: {'an animation' if exc.kind == 'animated' else 'a multi-page file'} of "
                          f"{exc.frames} frames; the judge and the editor would see only the first while a viewer "
                          "shows them all. Save the frame you mean as a PNG or JPEG.")
        return checked
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        checked.reason = "too_many_pixels"
        checked.detail = f"{where}: the image is too large to decode safely; downscale it."
        return checked
    except UnidentifiedImageError:
        checked.reason = "not_an_image"
        checked.detail = f"{where}: not a readable image (Pillow does not recognise it); remove it or convert it to PNG or JPEG."
        return checked
    except OSError as exc:
        truncated = "truncated" in str(exc).lower()
        checked.reason = "truncated" if truncated else "corrupt"
        checked.detail = f"{where}: {'the file ends early' if truncated else 'the image data is damaged'} ({exc}); re-export or re-download it."
        return checked
    except Exception as exc:  # noqa: BLE001 - any decoder failure quarantines the file, the batch goes on
        checked.reason = "corrupt"
        checked.detail = f"{where}: could not decode ({type(exc).__name__}: {exc}); re-export it."
        return checked
    checked.extra = {"original_sha256": sha256_bytes(data), "original_format": checked.format,
                     "metadata_removed": ",".join(clean.removed)}
    checked.format, checked.width, checked.height = clean.format, clean.width, clean.height
    checked.stored = clean.data
    return checked


class FolderSource(Source):
    """Your images: a folder, with a manifest (CSV, JSONL, Parquet) or category subfolders."""

    origin = "folder"
    Params = ProfileParams  # none: the folder and manifest are the run's settings (SP_SOURCE_DIR, SP_MANIFEST)

    def __init__(self, policy: Policy):
        self.policy = policy
        self.info = ModelInfo(model_id="folder", revision="", device="none")

    def fingerprint(self, category: Category, options: SourceOptions) -> Any:
        """Name, size and modification time of every file under the folder, and of the manifest."""
        root, manifest = _folder_paths(options)
        listing = list_folder(root)
        files = [(printable(rel), *_stat(root / rel)) for rel in listing.candidates + listing.skipped]
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
                ref=printable(entry.ref), data=checked.stored if checked.ok else checked.data,
                suffix=FORMAT_SUFFIX.get(checked.format, ".img"),
                width=checked.width, height=checked.height, format=checked.format,
                reason=None if checked.ok else checked.reason, detail=checked.detail,
                columns={"manifest_rating": entry.rating, "manifest_category": entry.category,
                         "manifest_rationale": entry.rationale,
                         "manifest_variant_ratings": json.dumps(entry.variant_ratings) if entry.variant_ratings else None,
                         "photo_id": f"photo:{entry.photo}" if entry.photo else None, **checked.extra})

    def intake_notes(self, categories: Sequence[Category], options: SourceOptions) -> dict[str, dict[str, Any]]:
        """What the folder holds besides the files ``scan`` offers, for each category and for the whole
        folder ('*'): files skipped as not images (manifests, notes, hidden files) and, with a manifest,
        files that no manifest row names. Neither kind counts in a category's 'in'."""
        root, manifest = _folder_paths(options)
        listing = list_folder(root)
        unlisted: list[str] = []
        if manifest is not None:
            named = {_resolve(ref, root)[0] for ref in manifest_refs(manifest)} - {None}
            unlisted = [rel for rel in listing.candidates if _resolve(rel, root)[0] not in named]
        notes = {"*": _notes(listing.skipped, unlisted)}
        for category in categories:
            notes[category.slug] = _notes(_of_category(listing.skipped, category.slug, options.policy),
                                          _of_category(unlisted, category.slug, options.policy))
        return notes


def _of_category(refs: list[str], slug: str, policy: Policy) -> list[str]:
    """The files a category's scan would have seen: those in its folder and those in no category folder."""
    return [r for r in refs if folder_category(r, policy) in (None, [slug])]


def _notes(skipped: list[str], unlisted: list[str]) -> dict[str, Any]:
    return {"skipped_files": len(skipped), "skipped_examples": [printable(r) for r in skipped[:EXAMPLES]],
            "unlisted_images": len(unlisted), "unlisted_examples": [printable(r) for r in unlisted[:EXAMPLES]]}


def _stat(path: Path) -> tuple[int, int]:
    """Size and modification time; of the link itself when it leads nowhere (a loop, a missing target)."""
    try:
        st = path.stat()
    except (OSError, RuntimeError):
        try:
            st = path.lstat()
        except OSError:
            return -1, -1
    return st.st_size, st.st_mtime_ns


def _folder_paths(options: SourceOptions) -> tuple[Path, Path | None]:
    if not options.source_dir:
        raise ValueError("source 'folder' needs source_dir (env SP_SOURCE_DIR): the folder that holds your images.")
    root = Path(options.source_dir).expanduser().resolve()
    if not root.is_dir():
        raise ValueError(f"source_dir {root} is not a folder; fix SP_SOURCE_DIR or the 'source_dir' setting.")
    manifest = Path(options.manifest).expanduser().resolve() if options.manifest else None
    return root, manifest
