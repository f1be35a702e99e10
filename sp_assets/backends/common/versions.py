"""Installed package versions, recorded with every model result so a row says which code made it."""

from __future__ import annotations

import importlib.metadata

NOT_INSTALLED = "not-installed"


def package_version(dist: str) -> str:
    """The installed version of distribution ``dist``, or ``not-installed``."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return NOT_INSTALLED
