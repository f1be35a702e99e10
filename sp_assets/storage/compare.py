"""Compare what two databases hold, less what legitimately differs between runs (run ids, times).

Used to check reproducibility: the same inputs and config must give the same rows, whether a run went
through in one go or was killed and started again.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Sequence

import duckdb

from sp_assets.storage.schema import SCHEMA

# Columns that differ between two runs of the same inputs and config.
VOLATILE = frozenset({"run_id", "created_at", "seconds", "computed_run_id", "stage"})
SKIPPED_TABLES = frozenset({"stage_runs"})  # timings and counts of each run, by design


def read_only_query(db: str | os.PathLike[str], sql: str, params: Sequence[Any] | None = None,
                    timeout_s: float = 30.0) -> list[tuple]:
    """Rows of ``sql`` from a database another process may be writing (waits while it holds the file)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            con = duckdb.connect(str(db), read_only=True)
            break
        except duckdb.IOException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        return con.execute(sql, list(params or [])).fetchall()
    except duckdb.CatalogException:
        return []  # the table does not exist yet
    finally:
        con.close()


def stable_rows(db: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Every table's rows (as sorted JSON lines) without the volatile columns."""
    out = {}
    for table, cols in SCHEMA.items():
        if table in SKIPPED_TABLES:
            continue
        names = [c for c, _, _ in cols if c not in VOLATILE]
        rows = [dict(zip(names, r)) for r in read_only_query(db, f"SELECT {', '.join(names)} FROM {table}")]
        if table == "model_calls":  # an edit's stored answer carries how long it took
            for r in rows:
                if r["role"] == "editor":
                    r["output_json"] = {k: v for k, v in json.loads(r["output_json"]).items() if k != "seconds"}
        out[table] = sorted(json.dumps(r, default=str, sort_keys=True) for r in rows)
    return out


def differences(a: dict[str, list[str]], b: dict[str, list[str]]) -> dict[str, tuple[int, int]]:
    """table -> (rows only in a, rows only in b), for the tables that differ."""
    out = {}
    for table in sorted(set(a) | set(b)):
        sa, sb = set(a.get(table, [])), set(b.get(table, []))
        if sa != sb or len(a.get(table, [])) != len(b.get(table, [])):
            out[table] = (len(sa - sb), len(sb - sa))
    return out
