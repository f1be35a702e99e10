"""The DuckDB side of storage: short-lived connections with retries, slice writes, appends and queries.

No model ever runs while a connection is open: DuckDB lets one process at a time hold a database file,
so stages read their inputs, close, compute, then open again to commit.
"""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Mapping, Sequence

import duckdb
import polars as pl

from sp_assets.storage.schema import SCHEMA, ensure_schema
from sp_assets.storage.schema import columns as table_columns


ConnectionFactory = Callable[[], ContextManager[duckdb.DuckDBPyConnection]]


def _frame(table: str, rows: Sequence[Mapping[str, Any]]) -> pl.DataFrame:
    """Rows as a frame with exactly the table's columns, in order, typed for DuckDB."""
    columns = table_columns(table)
    dtypes = {
        "VARCHAR": pl.Utf8,
        "INTEGER": pl.Int32,
        "BIGINT": pl.Int64,
        "DOUBLE": pl.Float64,
        "BOOLEAN": pl.Boolean,
        "TIMESTAMP": pl.Datetime("us"),
    }
    schema = {name: dtypes[sql_type] for name, sql_type, _ in SCHEMA[table]}
    for i, row in enumerate(rows):
        unknown = set(row) - set(columns)
        if unknown:
            raise KeyError(f"row {i} for table {table!r} has unknown columns {sorted(unknown)}")
    data = {name: [row.get(name) for row in rows] for name in columns}
    return pl.DataFrame(data, schema=schema)


class Store:
    """The DuckDB side of the project. Give it a connection factory (a DuckDBResource's
    ``get_connection`` inside Dagster, ``Store.at(path)`` elsewhere)."""

    def __init__(self, connect: ConnectionFactory, read_only: bool = False):
        self._connect = connect
        self.read_only = read_only

    @classmethod
    def at(cls, db_path: str | os.PathLike[str], read_only: bool = False) -> "Store":
        db_path = Path(db_path)

        @contextlib.contextmanager
        def connect() -> Iterator[duckdb.DuckDBPyConnection]:
            if not read_only:
                db_path.parent.mkdir(parents=True, exist_ok=True)
            con = _connect_with_retry(db_path, read_only)
            try:
                yield con
            finally:
                con.close()

        return cls(connect, read_only=read_only)

    def init(self) -> None:
        with self._connect() as con:
            ensure_schema(con)

    def replace_slice(self, table: str, where: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> int:
        """Delete the rows matching ``where`` and insert ``rows``, in one transaction.

        Every row must match ``where`` (it is the slice it replaces); this keeps a partition
        write from touching rows another category or profile produced.
        """
        columns = table_columns(table)
        for key in where:
            if key not in columns:
                raise KeyError(f"slice key {key!r} is not a column of {table!r}")
        for i, row in enumerate(rows):
            for key, value in where.items():
                if row.get(key) != value:
                    raise ValueError(
                        f"row {i} for {table!r} has {key}={row.get(key)!r}, outside the slice {dict(where)}"
                    )
        frame = _frame(table, rows)
        clause = " AND ".join(f"{key} = ?" for key in where) or "TRUE"
        with self._connect() as con:
            ensure_schema(con)
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(f"DELETE FROM {table} WHERE {clause}", list(where.values()))
                if len(frame):
                    con.register("incoming_rows", frame.to_arrow())
                    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_rows")
                    con.unregister("incoming_rows")
                con.execute("COMMIT")
            except Exception:
                con.execute("ROLLBACK")
                raise
        return len(frame)

    def append(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        frame = _frame(table, rows)
        if not len(frame):
            return
        with self._connect() as con:
            ensure_schema(con)
            con.register("incoming_rows", frame.to_arrow())
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_rows")
            con.unregister("incoming_rows")

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pl.DataFrame:
        with self._connect() as con:
            if not self.read_only:
                ensure_schema(con)
            return con.sql(sql, params=params or []).pl()

    def rows(self, table: str, where: Mapping[str, Any], order_by: str | None = None) -> list[dict[str, Any]]:
        """Rows of ``table`` matching equality filters, as dicts."""
        columns = table_columns(table)
        for key in where:
            if key not in columns:
                raise KeyError(f"filter key {key!r} is not a column of {table!r}")
        if order_by is not None and order_by not in columns:
            raise KeyError(f"order key {order_by!r} is not a column of {table!r}")
        clause = " AND ".join(f"{key} = ?" for key in where) or "TRUE"
        order = f" ORDER BY {order_by}" if order_by else ""
        return self.query(f"SELECT * FROM {table} WHERE {clause}{order}", list(where.values())).to_dicts()


def _connect_with_retry(path: Path, read_only: bool, attempts: int = 20) -> duckdb.DuckDBPyConnection:
    # Another process (the UI, a parallel run) may hold the file for a moment; wait rather than fail.
    delay = 0.1
    for attempt in range(attempts):
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or attempt == attempts - 1:
                raise duckdb.IOException(
                    f"{path}: could not open the database ({exc}). Another process holds it; "
                    "wait for it to finish or stop it."
                ) from exc
            time.sleep(delay)
            delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")
