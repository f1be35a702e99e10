"""The demo pool's photographs and their licence statements, read from ``demo_photos.yaml``."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import yaml


@dataclass(frozen=True)
class DemoPhoto:
    key: str
    file: str  # under skimage/data
    skimage: str  # the skimage.data function that loads it
    licence: str


@lru_cache(maxsize=1)
def demo_photos() -> dict[str, DemoPhoto]:
    text = resources.files("sp_assets.backends.sources").joinpath("demo_photos.yaml").read_text(encoding="utf-8")
    return {key: DemoPhoto(key=key, **entry) for key, entry in yaml.safe_load(text).items()}
