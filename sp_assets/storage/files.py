"""Atomic file writes: a temporary name in the same folder, then a rename, so no reader ever sees half a file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Read once at import: os.umask can only be read by setting it, which is not safe with threads running.
_UMASK = _read_umask()


def atomic_write(dest: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` on a temporary file next to ``dest``, then rename it to ``dest``.

    A crash or an error leaves ``dest`` as it was (absent or the previous version) and no temporary file.
    The file gets the usual permissions (0666 less the umask), not the owner-only mode of a temp file.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".tmp-", suffix=dest.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return dest


def atomic_write_bytes(dest: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(dest, lambda tmp: tmp.write_bytes(data))
