"""Parquet shards in the Hugging Face ``datasets`` layout: ``data/<split>-NNNNN-of-NNNNN.parquet``, Image features."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.parquet as pq

from sp_assets.release.columns import Blobs, Columns, features, row_values

ROW_GROUP_SIZE = 100  # rows per Parquet row group (image rows are large; small groups stream well)


def arrow_schema(columns: Columns) -> pa.Schema:
    """The columns, with their ``datasets`` features in the schema metadata (how ``datasets`` finds them)."""
    return pa.schema([pa.field(n, t) for n, t in columns],
                     metadata={"huggingface": json.dumps({"info": {"features": features(columns)}})})


def describe(has_controls: bool, has_lookalikes: bool = False) -> str:
    """The datasheet's line for this format."""
    return ("`data/<split>-NNNNN-of-NNNNN.parquet`, Hugging Face `datasets` layout with Image features "
            "(`unsafe_image`, `safe_image`" + (", `control_image`" if has_controls else "") + ")"
            + ("; the look-alikes in `lookalikes/<split>-NNNNN-of-NNNNN.parquet` (Image feature `image`, "
               "ClassLabel `label`), the card's `lookalikes` config" if has_lookalikes else "") + ".")


class ParquetShard:
    """One Parquet shard, written a row group at a time: memory holds ROW_GROUP_SIZE rows of images, not the shard."""

    directory = "data"

    @staticmethod
    def shard_name(split: str, index: int, count: int) -> str:
        return f"{split}-{index:05d}-of-{count:05d}.parquet"

    def __init__(self, path: Path, columns: Columns):
        self.columns = list(columns)
        self.schema = arrow_schema(self.columns)
        self._writer = pq.ParquetWriter(path, self.schema, compression="snappy")
        self._pending: dict[str, list[Any]] = {n: [] for n, _ in self.columns}
        self._buffered = 0
        self._rows = 0

    def __enter__(self) -> "ParquetShard":
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self._flush_rest()
        self._writer.close()

    def write(self, pair: Mapping[str, Any], blobs: Blobs) -> None:
        for name, value in row_values(pair, blobs, self.columns).items():
            self._pending[name].append(value)
        self._rows += 1
        self._buffered += 1
        if self._buffered >= ROW_GROUP_SIZE:
            self._flush()

    def _flush_rest(self) -> None:
        # A shard without rows still gets one (empty) row group: it carries the schema.
        if self._buffered or not self._rows:
            self._flush()

    def _flush(self) -> None:
        table = pa.table([pa.array(self._pending[n], type=t) for n, t in self.columns], schema=self.schema)
        self._writer.write_table(table)
        for values in self._pending.values():
            values.clear()
        self._buffered = 0


class LookalikeParquetShard(ParquetShard):
    """The look-alikes' shards: ``lookalikes/<split>-NNNNN-of-NNNNN.parquet`` (the card's second config)."""

    directory = "lookalikes"
