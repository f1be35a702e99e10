"""The DuckDB side of storage: short-lived connections with retries, slice writes, appends and queries.

No model ever runs while a connection is open: DuckDB lets one process at a time hold a database file,
so stages read their inputs, close, compute, then open again to commit.
"""

from __future__ import annotations

import contextlib
import os
import random
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
        "BLOB": pl.Binary,
    }
    schema = {name: dtypes[sql_type] for name, sql_type, _ in SCHEMA[table]}
    for i, row in enumerate(rows):
        unknown = set(row) - set(columns)
        if unknown:
            raise KeyError(f"row {i} for table {table!r} has unknown columns {sorted(unknown)}")
    data = {name: [row.get(name) for row in rows] for name in columns}
    return pl.DataFrame(data, schema=schema)


DEFAULT_LOCK_TIMEOUT_S = 600.0


class Store:
    """The DuckDB side of the project: ``Store.at(path)``.

    Every call opens a connection, does one short thing (a read, or one transaction) and closes it,
    so other processes (a parallel run, the UI) can use the file in between. When another process
    holds the file, opening is retried with backoff for up to ``lock_timeout_s`` seconds.
    """

    def __init__(self, connect: ConnectionFactory, read_only: bool = False):
        self._connect_raw = connect
        self.read_only = read_only
        self._schema_ready = read_only  # a writable store makes sure of the schema once, on first use

    @classmethod
    def at(cls, db_path: str | os.PathLike[str], read_only: bool = False,
           lock_timeout_s: float = DEFAULT_LOCK_TIMEOUT_S) -> "Store":
        db_path = Path(db_path)

        @contextlib.contextmanager
        def connect() -> Iterator[duckdb.DuckDBPyConnection]:
            if not read_only:
                db_path.parent.mkdir(parents=True, exist_ok=True)
            con = connect_with_retry(db_path, read_only, lock_timeout_s)
            try:
                yield con
            finally:
                con.close()

        return cls(connect, read_only=read_only)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection for one read or one commit, closed when it is done: the store never holds one
        between calls, so none is held while a model runs and other processes can use the file."""
        with self._connect_raw() as con:
            yield self._ready(con)

    def _ready(self, con: duckdb.DuckDBPyConnection) -> duckdb.DuckDBPyConnection:
        if not self._schema_ready:
            ensure_schema(con)
            self._schema_ready = True
        return con

    def init(self) -> None:
        with self._connect():
            pass

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
        clause = " AND ".join(f"{key} = ?" for key in where) or "TRUE"
        return self._write(table, _frame(table, rows), f"DELETE FROM {table} WHERE {clause}", list(where.values()))

    def upsert(self, table: str, key: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> int:
        """Insert ``rows``, replacing stored rows with the same ``key`` columns, in one transaction."""
        frame = _frame(table, rows)
        if not len(frame):
            return 0
        cols = ", ".join(key)
        return self._write(table, frame, f"DELETE FROM {table} WHERE ({cols}) IN (SELECT {cols} FROM incoming_rows)", [])

    def _write(self, table: str, frame: pl.DataFrame, delete_sql: str, params: list[Any]) -> int:
        with self._connect() as con:
            con.register("incoming_rows", frame.to_arrow())
            con.execute("BEGIN TRANSACTION")
            try:
                con.execute(delete_sql, params)
                if len(frame):
                    con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_rows")
                con.execute("COMMIT")
            except BaseException:
                con.execute("ROLLBACK")
                raise
            finally:
                con.unregister("incoming_rows")
        return len(frame)

    def append(self, table: str, rows: Sequence[Mapping[str, Any]]) -> None:
        frame = _frame(table, rows)
        if not len(frame):
            return
        with self._connect() as con:
            con.register("incoming_rows", frame.to_arrow())
            con.execute(f"INSERT INTO {table} BY NAME SELECT * FROM incoming_rows")
            con.unregister("incoming_rows")

    def query(self, sql: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> pl.DataFrame:
        with self._connect() as con:
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


def connect_with_retry(path: Path, read_only: bool, timeout_s: float = DEFAULT_LOCK_TIMEOUT_S
                       ) -> duckdb.DuckDBPyConnection:
    """Open the file; while another process holds its lock, wait with backoff, up to ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower():
                raise
            if time.monotonic() + delay > deadline:
                raise duckdb.IOException(
                    f"{path}: another process has held the database for {timeout_s:.0f} s ({exc}). Fix: wait for "
                    "that process (another run, a Python shell, a DuckDB CLI) to finish or stop it; or raise "
                    "settings.db_lock_timeout_s (env SP_DB_LOCK_TIMEOUT)."
                ) from exc
            time.sleep(delay * (0.5 + random.random()))  # jitter: two waiting runs do not retry in step
            delay = min(delay * 2, 2.0)
