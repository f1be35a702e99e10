"""WebDataset shards: ``webdataset/<split>-NNNNNN.tar``, one sample per pair (its images and a JSON of the rest)."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path
from typing import Any, Mapping

from sp_assets.release.columns import LABEL_NAMES, Blobs, Columns, image_half, row_key


def describe(has_controls: bool, has_lookalikes: bool = False) -> str:
    """The datasheet's line for this format."""
    return ("`webdataset/<split>-NNNNNN.tar`, one sample per pair keyed by `pair_id`: `<key>.unsafe.png`, "
            "`<key>.safe.png`" + (", `<key>.control.png` (where present)" if has_controls else "")
            + ", `<key>.json` (every column but the images)"
            + ("; the look-alikes in `webdataset/lookalikes/<split>-NNNNNN.tar`, keyed by `lookalike_id`: "
               "`<key>.image.png`, `<key>.json`" if has_lookalikes else "") + ".")


def member_names(pair: Mapping[str, Any], blobs: Blobs) -> dict[str, str]:
    """half -> tar member name (``<key>.<half><suffix>``) for the halves (images) the row has."""
    return {h: f"{row_key(pair)}.{h}{Path(b[1]).suffix}" for h, b in blobs.items() if b is not None}


def sample_json(pair: Mapping[str, Any], columns: Columns, members: Mapping[str, str]) -> bytes:
    """The sample's ``.json``: every column but the images, labels by name, and the member names."""
    meta: dict[str, Any] = {}
    for name, _ in columns:
        if image_half(name):
            continue
        if name == "label":
            meta[name] = pair.get("label")
        elif name.endswith("_label"):
            half = name[: -len("_label")]
            meta[name] = None if half == "control" and half not in members else LABEL_NAMES[0 if half == "safe" else 1]
        else:
            meta[name] = pair.get(name)
    meta["members"] = dict(members)
    return (json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str) + "\n").encode("utf-8")


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    # Fixed owner, mode and time: the same pairs give the same tar bytes.
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


class WebDatasetShard:
    """One tar shard (USTAR), members in pair order."""

    directory = "webdataset"

    @staticmethod
    def shard_name(split: str, index: int, count: int) -> str:
        return f"{split}-{index:06d}.tar"

    def __init__(self, path: Path, columns: Columns):
        self.columns = list(columns)
        self._tar = tarfile.open(path, "w", format=tarfile.USTAR_FORMAT)

    def __enter__(self) -> "WebDatasetShard":
        return self

    def __exit__(self, *exc: Any) -> None:
        self._tar.close()

    def write(self, pair: Mapping[str, Any], blobs: Blobs) -> None:
        members = member_names(pair, blobs)
        for half, blob in blobs.items():
            if blob is not None:
                _add(self._tar, members[half], blob[0])
        _add(self._tar, f"{row_key(pair)}.json", sample_json(pair, self.columns, members))


class LookalikeWebDatasetShard(WebDatasetShard):
    """The look-alikes' tars: ``webdataset/lookalikes/<split>-NNNNNN.tar``, one sample per look-alike."""

    directory = "webdataset/lookalikes"
