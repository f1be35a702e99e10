"""A folder of the user's images: bad files are quarantined with a reason, the rest go on, counts add up."""

from __future__ import annotations

import io

import numpy as np
from dagster import AssetKey
from PIL import Image

from tests.conftest import run_graph, store_at


def _png(seed: int, size=(64, 48)) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _damaged_png() -> bytes:
    data = bytearray(_png(6))
    start = data.find(b"IDAT") + 40
    for k in range(start, start + 30):  # flip bytes inside the compressed pixel data
        data[k] ^= 0xFF
    return bytes(data)


def _folder(tmp_path):
    src = tmp_path / "images"
    src.mkdir()
    (src / "good1.png").write_bytes(_png(1))
    (src / "good2.png").write_bytes(_png(2))
    (src / "copy_of_good1.png").write_bytes(_png(1))
    (src / "truncated.png").write_bytes(_png(3)[:200])
    (src / "notes.txt").write_text("not an image")
    (src / "corrupt.png").write_bytes(_damaged_png())
    (src / "huge.png").write_bytes(_png(4, size=(400, 300)))
    (tmp_path / "outside.png").write_bytes(_png(5))
    return src


def test_bad_files_are_quarantined_and_counts_add_up(tmp_path):
    src = _folder(tmp_path)
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(
        "path,rating,category,rationale\n"
        "good1.png,unsafe,O2: Violence,threat on a sign\n"
        "good2.png,safe,o2_violence,\n"
        "copy_of_good1.png,unsafe,O2,\n"
        "truncated.png,unsafe,O2,\n"
        "notes.txt,unsafe,O2,\n"
        "corrupt.png,unsafe,O2,\n"
        "huge.png,unsafe,O2,\n"
        "../outside.png,unsafe,O2,\n"
        "missing.png,unsafe,O2,\n"
        "good2.png,unsafe,O42,\n"
        "good1.png,unsafe,O1,\n"
    )
    data = tmp_path / "data"
    result = run_graph(data, "o2_violence", "o2_violence", selection=["source_pool"], source="folder",
                       source_dir=str(src), manifest=str(manifest), max_image_pixels=100_000)
    store = store_at(data)
    accepted = store.rows("source_images", {"category": "o2_violence"}, order_by="origin_ref")
    rejected = {r["origin_ref"]: r for r in store.rows("source_rejections", {"category": "o2_violence"})}
    assert [r["origin_ref"] for r in accepted] == ["good1.png", "good2.png"]
    assert accepted[0]["manifest_rating"] == "unsafe" and accepted[0]["manifest_category"] == "O2: Violence"
    assert {k: v["reason"] for k, v in rejected.items()} == {
        "copy_of_good1.png": "duplicate",
        "truncated.png": "truncated",
        "notes.txt": "not_an_image",
        "corrupt.png": "corrupt",
        "huge.png": "too_many_pixels",
        "../outside.png": "path_escapes_root",
        "missing.png": "missing",
        "good2.png": "unknown_category",
    }
    # Every message names the file and says what to do.
    assert "manifest.csv line 5" in rejected["truncated.png"]["detail"]  # the physical line, header counted
    assert "O42" in rejected["good2.png"]["detail"] and "o2_violence" in rejected["good2.png"]["detail"]
    assert "100000" in rejected["huge.png"]["detail"]
    # Readable bad files are kept in quarantine, byte for byte.
    q = rejected["truncated.png"]["quarantine_path"]
    assert (data / q).read_bytes() == (src / "truncated.png").read_bytes()
    # in = accepted + rejected (the O1 row belongs to another partition and is not counted here).
    mat = result.asset_materializations_for_node("source_pool")[0]
    assert mat.metadata["rows_in"].value == 10
    assert mat.metadata["rows_out"].value + mat.metadata["rows_rejected"].value == 10
    checks = {c.check_name: c.passed for c in result.get_asset_check_evaluations()}
    assert checks["source_pool_counts_add_up"] and checks["source_pool_has_unique_keys"]
    assert mat.asset_key == AssetKey("source_pool")


def test_folder_without_manifest_uses_category_subfolders(tmp_path):
    src = tmp_path / "images"
    (src / "o2_violence").mkdir(parents=True)
    (src / "O6").mkdir()
    (src / "o2_violence" / "a.png").write_bytes(_png(1))
    (src / "O6" / "b.png").write_bytes(_png(2))
    (src / "loose.png").write_bytes(_png(3))  # no category folder: judged under every category
    data = tmp_path / "data"
    run_graph(data, "o2_violence", "o6_weapons_substances", selection=["source_pool"], source="folder", source_dir=str(src))
    store = store_at(data)
    got = store.query("SELECT category, origin_ref FROM source_images ORDER BY ALL").rows()
    cats = {"o2_violence", "o3_sexual", "o4_nudity", "o5_criminal_planning", "o6_weapons_substances"}
    assert ("o2_violence", "o2_violence/a.png") in got and ("o6_weapons_substances", "O6/b.png") in got
    assert {c for c, ref in got if ref == "loose.png"} == cats
    assert len(got) == 2 + len(cats)


def test_an_unchanged_folder_is_not_taken_in_again_and_a_changed_one_is(tmp_path):
    """One stored fingerprint per category: the same files keep their rows; a new file, or a stored file
    gone from the data root, takes the category in again. The rows are the same either way."""
    src = _folder(tmp_path)
    data = tmp_path / "data"
    cat = "o2_violence"

    def run():
        result = run_graph(data, cat, cat, selection=["source_pool"], source="folder", source_dir=str(src))
        store = store_at(data)
        rows = store.query("SELECT * EXCLUDE (run_id, created_at) FROM source_images ORDER BY image_sha256").to_dicts()
        rejected = store.query("SELECT * EXCLUDE (run_id, created_at) FROM source_rejections "
                               "ORDER BY origin_ref").to_dicts()
        [intake] = store.query("SELECT run_id, n_in FROM source_intakes WHERE category = ?", [cat]).rows()
        mat = result.asset_materializations_for_node("source_pool")[0]
        assert mat.metadata["rows_in"].value == intake[1]
        return mat.metadata["categories_kept"].value, intake[0], rows, rejected

    kept, first_run, rows, rejected = run()
    assert kept == 0 and len(rows) == 3 and {r["reason"] for r in rejected} >= {"duplicate", "corrupt"}
    kept, run_id, *same = run()
    assert kept == 1 and run_id == first_run and same == [rows, rejected]
    (data / rows[0]["image_path"]).unlink()  # a stored image is gone
    kept, run_id, *same = run()
    assert kept == 0 and run_id != first_run and same == [rows, rejected] and (data / rows[0]["image_path"]).is_file()
    (src / "good3.png").write_bytes(_png(7))
    kept, _, rows_after, _ = run()
    assert kept == 0 and len(rows_after) == len(rows) + 1
