"""DuckDB slice writes and the content-addressed image store."""

from __future__ import annotations

import datetime as dt

import pytest
from PIL import Image

from sp_assets.storage import ImageStore, Store, png_bytes


def _row(cat: str, sha: str, run: str) -> dict:
    return {"category": cat, "image_sha256": sha, "image_path": f"images/{sha}.png", "width": 1, "height": 1,
            "origin": "demo", "origin_ref": sha, "run_id": run, "created_at": dt.datetime(2026, 1, 1)}


def test_replace_slice_touches_only_its_slice(tmp_path):
    store = Store.at(tmp_path / "db.duckdb")
    store.replace_slice("source_images", {"category": "a"}, [_row("a", "1", "r1"), _row("a", "2", "r1")])
    store.replace_slice("source_images", {"category": "b"}, [_row("b", "1", "r1")])
    store.replace_slice("source_images", {"category": "a"}, [_row("a", "3", "r2")])
    got = store.query("SELECT category, image_sha256 FROM source_images ORDER BY ALL").rows()
    assert got == [("a", "3"), ("b", "1")]


def test_replace_slice_refuses_rows_outside_the_slice_and_rolls_back(tmp_path):
    store = Store.at(tmp_path / "db.duckdb")
    store.replace_slice("source_images", {"category": "a"}, [_row("a", "1", "r1")])
    with pytest.raises(ValueError, match="outside the slice"):
        store.replace_slice("source_images", {"category": "a"}, [_row("b", "2", "r2")])
    with pytest.raises(KeyError, match="unknown columns"):
        store.replace_slice("source_images", {"category": "a"}, [{**_row("a", "2", "r2"), "bogus": 1}])
    assert store.query("SELECT image_sha256 FROM source_images").rows() == [("1",)]


def test_values_are_parameters_not_sql(tmp_path):
    store = Store.at(tmp_path / "db.duckdb")
    evil = "a'; DROP TABLE source_images; --"
    store.replace_slice("source_images", {"category": evil}, [_row(evil, "1", "r1")])
    assert store.rows("source_images", {"category": evil})[0]["category"] == evil


def test_lineage_view_exists(tmp_path):
    store = Store.at(tmp_path / "db.duckdb")
    store.init()
    assert store.query("SELECT * FROM pair_lineage").is_empty()


def test_image_store_is_content_addressed_and_contained(tmp_path):
    images = ImageStore(tmp_path)
    im = Image.new("RGB", (8, 8), (10, 20, 30))
    sha, rel = images.put_image(im)
    sha2, rel2 = images.put_image(im.copy())
    assert (sha, rel) == (sha2, rel2)
    assert images.path(rel).read_bytes() == png_bytes(im)
    assert not list(images.path(rel).parent.glob(".tmp-*"))
    with pytest.raises(ValueError, match="escapes the image root"):
        images.path("../../etc/passwd")


def test_an_older_database_gains_new_columns(tmp_path):
    import duckdb

    path = tmp_path / "old.duckdb"
    con = duckdb.connect(str(path))
    con.execute("CREATE TABLE source_images (category VARCHAR, image_sha256 VARCHAR)")
    con.execute("INSERT INTO source_images VALUES ('a', '1')")
    con.close()
    store = Store.at(path)
    store.replace_slice("source_images", {"category": "b"}, [_row("b", "2", "r1")])
    got = store.query("SELECT category, image_sha256, origin FROM source_images ORDER BY ALL").rows()
    assert got == [("a", "1", None), ("b", "2", "demo")]


def _hold_database(path, seconds: float):
    """Another process that holds the DuckDB file for ``seconds`` (DuckDB locks it per process)."""
    import subprocess
    import sys

    code = (f"import duckdb, sys, time; c = duckdb.connect({str(path)!r}); print('held', flush=True); "
            f"time.sleep({seconds}); c.close()")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_database_is_waited_for_then_reported_with_the_file_and_the_fix(tmp_path):
    import duckdb
    import pytest

    db = tmp_path / "held.duckdb"
    Store.at(db).init()
    holder = _hold_database(db, 30)
    try:
        with pytest.raises(duckdb.IOException) as err:
            Store.at(db, lock_timeout_s=1.0).query("SELECT 1")
        assert str(db) in str(err.value) and "SP_DB_LOCK_TIMEOUT" in str(err.value)
    finally:
        holder.kill()
        holder.wait(timeout=10)
    brief = _hold_database(db, 1.5)  # let go after 1.5 s: a writer that waits gets through
    try:
        assert Store.at(db, lock_timeout_s=30).query("SELECT count(*) AS n FROM stage_runs").item() == 0
    finally:
        brief.wait(timeout=10)
