"""One pass over the pairs, shard by shard, that reads each stored image once and feeds every shard format.

A format (``parquet.ParquetShard``, ``webdataset.WebDatasetShard``) is a class with the same shape: a
``directory``, a ``shard_name(split, index, count)``, and instances opened on a path, used as a
context manager, that take ``write(pair, blobs)`` for each pair.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Protocol, Sequence

import sp_assets.release.publishable as publishable
from sp_assets.core.hashing import sha256_bytes
from sp_assets.release.columns import LOOKALIKE_IMAGE, Blob, Blobs, Columns, image_halves, row_key
from sp_assets.release.report import ExportError
from sp_assets.storage import ImageStore


class ShardWriter(Protocol):
    directory: ClassVar[str]

    @staticmethod
    def shard_name(split: str, index: int, count: int) -> str: ...

    def __init__(self, path: Path, columns: Columns) -> None: ...

    def __enter__(self) -> "ShardWriter": ...

    def __exit__(self, *exc: object) -> None: ...

    def write(self, pair: Mapping[str, Any], blobs: Blobs) -> None: ...


OnPair = Callable[[dict[str, Any], Blobs], None]


def _suffix(rel: str) -> str:
    ext = Path(rel).suffix.lower() or ".bin"
    return ".jpg" if ext == ".jpeg" else ext


class StoredImages:
    """Reads a pair's stored image files, checks their bytes against the recorded sha256, and hands out the
    bytes to publish (``publishable``): a file that still holds metadata is cleaned, and remembered."""

    def __init__(self, images: ImageStore):
        self.images = images
        self.cleaned: dict[str, publishable.CleanedAtExport] = {}  # stored path -> how it was cleaned at export

    def read(self, pair: Mapping[str, Any], half: str) -> Blob | None:
        """(bytes, export file name) of one half (or a look-alike's ``image``); None for a pair without a control."""
        sha_key = "source_sha256" if half == "unsafe" else f"{half}_sha256"
        rel, sha = pair.get(f"{half}_path"), pair.get(sha_key)
        where = f"{'pair' if pair.get('pair_id') else 'look-alike'} {row_key(pair)} ({pair['category']})"
        if not rel or not sha:
            if half == "control":
                return None
            raise ExportError(f"{where} has no {half} image recorded; re-materialize benchmark_split for that "
                              "category.")
        data = self._verified(rel, sha, f"{where}: the {half} image {rel}")
        try:
            result = publishable.cleaned(data)
        except publishable.Unpublishable as exc:
            raise ExportError(f"{where}: the {half} image {rel} cannot be published: {exc}. "
                              + _remedy(half, pair["category"])) from exc
        if result is None:
            return data, f"{sha}{_suffix(rel)}"
        self.cleaned[rel] = done = publishable.record(sha, result)
        return result.data, done.name

    def _verified(self, rel: str, sha: str, what: str) -> bytes:
        try:
            data = self.images.read_bytes(rel)
        except FileNotFoundError as exc:
            raise ExportError(f"{what} is missing under {self.images.root}; "
                              "re-materialize the category to regenerate it.") from exc
        if sha256_bytes(data) != sha:
            raise ExportError(f"{what} does not match its recorded sha256 {sha}; "
                              "the image store is damaged. Re-run the category.")
        return data

    def local_file(self, rel: str, staging: Path) -> Path:
        """A file on this machine with the bytes published for the stored ``rel``: the stored file itself when
        it went out as it is, else a clean copy under ``staging`` (for formats that copy files, as FiftyOne)."""
        done = self.cleaned.get(rel)
        if done is None:
            return self.images.path(rel)
        dest = staging / done.name
        if not dest.exists():
            staging.mkdir(parents=True, exist_ok=True)
            dest.write_bytes(publishable.publishable_bytes(self.images.read_bytes(rel)))
        return dest


def _remedy(half: str, category: str) -> str:
    if half in ("unsafe", LOOKALIKE_IMAGE):  # a source: intake now stores one clean picture or quarantines it
        return f"Re-materialize source_pool and the stages after it for {category}."
    return f"Re-materialize edited_images and the stages after it for {category} (or fix the editor's output)."


def shard_rows(rows: Sequence[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    """Rows cut into shards of ``size``; one empty shard for no rows (it still carries the schema)."""
    return [list(rows[i:i + size]) for i in range(0, len(rows), size)] or [[]]


def write_shards(root: Path, rows_by_split: Mapping[str, Sequence[dict[str, Any]]], columns: Columns,
                 formats: Mapping[str, type[ShardWriter]], images: StoredImages, shard_size: int,
                 on_pair: OnPair) -> dict[str, dict[str, list[Path]]]:
    """Write every split in shards of every format under ``root``; format -> split -> shard paths.

    ``on_pair(pair, blobs)`` sees each pair's images as they are read (the gallery copies them).
    """
    for fmt in formats.values():
        (root / fmt.directory).mkdir(parents=True, exist_ok=True)  # pairs and look-alikes may share one
    written: dict[str, dict[str, list[Path]]] = {name: {} for name in formats}
    halves = image_halves(columns)
    for split, rows in rows_by_split.items():
        shards = shard_rows(rows, shard_size)
        for i, shard in enumerate(shards):
            paths = {name: root / fmt.directory / fmt.shard_name(split, i, len(shards))
                     for name, fmt in formats.items()}
            with contextlib.ExitStack() as stack:
                writers = [stack.enter_context(formats[name](path, columns)) for name, path in paths.items()]
                for pair in shard:
                    blobs = {h: images.read(pair, h) for h in halves}
                    for writer in writers:
                        writer.write(pair, blobs)
                    on_pair(pair, blobs)
            for name, path in paths.items():
                written[name].setdefault(split, []).append(path)
    return written
