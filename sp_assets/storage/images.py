"""The content-addressed image store: files named by the sha256 of their bytes, under the data root."""

from __future__ import annotations

import os
from pathlib import Path

from PIL import Image, ImageOps

from sp_assets.core.encoding import png_bytes
from sp_assets.core.hashing import sha256_bytes
from sp_assets.storage.files import atomic_write_bytes


class ImageStore:
    """Image files under ``root/images``, named by the sha256 of their bytes.

    Files are written to a temporary name and renamed, so a crash never leaves a half file under
    a real name, and rows are committed only after their files exist.
    """

    def __init__(self, data_root: str | os.PathLike[str]):
        self.root = Path(data_root).resolve()

    def relpath(self, sha: str, suffix: str, folder: str = "images") -> str:
        return f"{folder}/{sha[:2]}/{sha}{suffix}"

    def put_bytes(self, data: bytes, suffix: str, folder: str = "images") -> tuple[str, str]:
        """Store bytes under ``folder`` by their hash; returns (sha256, path relative to the root)."""
        sha = sha256_bytes(data)
        rel = self.relpath(sha, suffix, folder)
        dest = self.root / rel
        if not dest.exists():
            atomic_write_bytes(dest, data)
        return sha, rel

    def put_image(self, image: Image.Image) -> tuple[str, str]:
        return self.put_bytes(png_bytes(image), ".png")

    def path(self, rel: str) -> Path:
        """Absolute path of a stored file. Refuses paths that leave the data root."""
        full = (self.root / rel).resolve()
        if not full.is_relative_to(self.root):
            raise ValueError(f"stored path {rel!r} escapes the data root {self.root}")
        return full

    def exists(self, rel: str | None) -> bool:
        return bool(rel) and self.path(rel).is_file()

    def read_bytes(self, rel: str) -> bytes:
        return self.path(rel).read_bytes()

    def open(self, rel: str) -> Image.Image:
        with Image.open(self.path(rel)) as im:
            # Honour the camera's orientation tag so people and models see the picture upright.
            return ImageOps.exif_transpose(im).convert("RGB")
