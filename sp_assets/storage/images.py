"""The content-addressed image store: files named by the sha256 of their bytes, under one root.

The root is a local folder (the default, under the data root) or an fsspec URL (``s3://bucket/prefix``,
``gs://...``), so workers on other machines read sources and write edits without a shared disk. The
tables keep paths relative to the root, whatever it is.
"""

from __future__ import annotations

import io
import os
import posixpath
from pathlib import Path
from typing import Any

from PIL import Image

from sp_assets.core.encoding import png_bytes
from sp_assets.core.hashing import sha256_bytes
from sp_assets.storage.files import atomic_write_bytes

IMAGES_URL_ENV_VAR = "SP_IMAGES_URL"


def images_root(data_root: str | os.PathLike[str], images_url: str = "") -> str:
    """Where a run's images live: ``images_url`` (or $SP_IMAGES_URL) when set, else the data root."""
    return images_url or os.environ.get(IMAGES_URL_ENV_VAR, "").strip() or str(Path(data_root).expanduser().resolve())


def _is_url(root: str) -> bool:
    return "://" in root and not root.startswith("file://")


class ImageStore:
    """Image files under ``root/images``, named by the sha256 of their bytes.

    A local file is written to a temporary name and renamed, an object is written in one PUT: a crash
    never leaves half a file under a real name, and rows are committed only after their files exist.
    """

    def __init__(self, root: str | os.PathLike[str]):
        text = str(root)
        self.url = text if _is_url(text) else None
        if self.url is None:
            self.root: Any = Path(text.removeprefix("file://")).expanduser().resolve()
            self._fs, self._base = None, str(self.root)
        else:
            import fsspec

            self.root = self.url.rstrip("/")
            self._fs, self._base = fsspec.core.url_to_fs(self.root)
            self._base = self._base.rstrip("/")

    @property
    def is_local(self) -> bool:
        return self._fs is None

    def relpath(self, sha: str, suffix: str, folder: str = "images") -> str:
        return f"{folder}/{sha[:2]}/{sha}{suffix}"

    def _checked(self, rel: str) -> str:
        norm = posixpath.normpath(str(rel).replace("\\", "/"))
        if posixpath.isabs(norm) or norm == ".." or norm.startswith("../"):
            raise ValueError(f"stored path {rel!r} escapes the image root {self.root}")
        return norm

    def path(self, rel: str) -> Path:
        """Absolute path of a stored file on this machine (local stores only). Refuses paths that leave the root."""
        if not self.is_local:
            raise ValueError(f"images are at {self.root}, not in a local folder; read them with read_bytes({rel!r})")
        full = (self.root / self._checked(rel)).resolve()
        if not full.is_relative_to(self.root):
            raise ValueError(f"stored path {rel!r} escapes the image root {self.root}")
        return full

    def _remote(self, rel: str) -> str:
        return f"{self._base}/{self._checked(rel)}"

    def put_bytes(self, data: bytes, suffix: str, folder: str = "images") -> tuple[str, str]:
        """Store bytes under ``folder`` by their hash; returns (sha256, path relative to the root)."""
        sha = sha256_bytes(data)
        rel = self.relpath(sha, suffix, folder)
        if self.is_local:
            dest = self.path(rel)
            if not dest.exists():
                atomic_write_bytes(dest, data)
        elif not self._fs.exists(self._remote(rel)):
            self._fs.pipe_file(self._remote(rel), data)
        return sha, rel

    def put_image(self, image: Image.Image) -> tuple[str, str]:
        return self.put_bytes(png_bytes(image), ".png")

    def exists(self, rel: str | None) -> bool:
        if not rel:
            return False
        return self.path(rel).is_file() if self.is_local else bool(self._fs.exists(self._remote(rel)))

    def read_bytes(self, rel: str) -> bytes:
        return self.path(rel).read_bytes() if self.is_local else self._fs.cat_file(self._remote(rel))

    def open(self, rel: str) -> Image.Image:
        source: Any = self.path(rel) if self.is_local else io.BytesIO(self.read_bytes(rel))
        # Intake stored the picture upright and without metadata (core.image_clean): no orientation to apply.
        with Image.open(source) as im:
            return im.convert("RGB")
