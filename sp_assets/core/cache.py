"""Where SafetyPairs keeps what it can rebuild: ``SP_CACHE_DIR``, else the user's cache folder
(``platformdirs``: ``~/.cache/safetypairs`` on Linux, ``~/Library/Caches/safetypairs`` on macOS)."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

CACHE_ENV_VAR = "SP_CACHE_DIR"


def cache_dir() -> Path:
    """The cache folder (the judge's text vectors and heads, assembled model folders), read when asked."""
    raw = os.environ.get(CACHE_ENV_VAR)
    return Path(raw).expanduser() if raw else Path(platformdirs.user_cache_dir("safetypairs", appauthor=False))
