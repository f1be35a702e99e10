"""The demo pool's photographs and their licence statements, read from ``demo_photos.yaml``, and the
out-of-distribution photographs of the probe (``demo_ood.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
import importlib
from importlib import resources
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class HeldOutPhoto:
    """A photograph the demo pool never uses, shipped inside another installed package."""

    key: str
    package: str  # the importable package that ships it
    file: str  # under that package's folder
    licence: str

    def path(self) -> Path:
        return Path(importlib.import_module(self.package).__file__).parent / self.file


@lru_cache(maxsize=1)
def ood_spec() -> dict[str, Any]:
    """``demo_ood.yaml``: the out-of-distribution set's photos, fonts and phrases per category."""
    text = resources.files("sp_assets.backends.sources").joinpath("demo_ood.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def ood_photos() -> dict[str, HeldOutPhoto]:
    return {key: HeldOutPhoto(key=key, **entry) for key, entry in ood_spec()["photos"].items()}
