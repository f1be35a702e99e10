"""Sentence vectors kept per text, in one SQLite file per encoder: a judge whose examples grew by one row
encodes that row, not all of them again.

Keys are the sha256 of the text (with the encoding scheme's version), values the float32 bytes the
encoder gave. SQLite handles several processes (Ray workers each building the judge) reading and writing
the same file; a file that cannot be opened or written is passed over and the vectors are computed.
"""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

_CHUNK = 500  # keys per SELECT, well under SQLite's parameter limit


def text_key(scheme: str, text: str) -> str:
    return hashlib.sha256(f"{scheme}\0{text}".encode("utf-8", "surrogatepass")).hexdigest()


class VectorCache:
    """``get`` and ``put`` vectors of one dimension by key; every failure reads as a miss."""

    def __init__(self, path: Path, dim: int):
        self.path, self.dim = Path(path), int(dim)

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(self.path, timeout=60)
        con.execute("CREATE TABLE IF NOT EXISTS vectors (key TEXT PRIMARY KEY, vec BLOB NOT NULL)")
        return con

    def get(self, keys: Sequence[str]) -> dict[str, np.ndarray]:
        found: dict[str, np.ndarray] = {}
        try:
            con = self._connect()
        except (OSError, sqlite3.Error):
            return found
        try:
            for start in range(0, len(keys), _CHUNK):
                part = list(keys[start:start + _CHUNK])
                marks = ",".join("?" * len(part))
                for key, blob in con.execute(f"SELECT key, vec FROM vectors WHERE key IN ({marks})", part):
                    vec = np.frombuffer(blob, dtype=np.float32)
                    if vec.shape == (self.dim,):  # a damaged or foreign row is a miss
                        found[key] = vec
        except sqlite3.Error:
            return {}
        finally:
            con.close()
        return found

    def put(self, items: Iterable[tuple[str, np.ndarray]]) -> None:
        rows = [(key, np.asarray(vec, dtype=np.float32).tobytes()) for key, vec in items]
        try:
            con = self._connect()
        except (OSError, sqlite3.Error):
            return  # a read-only home: compute again next time
        try:
            with con:
                con.executemany("INSERT OR REPLACE INTO vectors (key, vec) VALUES (?, ?)", rows)
        except sqlite3.Error:
            pass
        finally:
            con.close()
