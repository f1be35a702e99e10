"""A folder as a user has it, through the whole graph from the command line: a portrait phone photo, a photo
with GPS, an animated GIF and hostile files. The category materializes, the counts add up, and nothing
published carries EXIF, GPS or a comment (read back from the exported bytes)."""

from __future__ import annotations

import base64
import csv

import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from pathlib import Path

import polars as pl
import pytest
from PIL import Image

from sp_assets.backends.sources.demo import generate_demo_pool
from sp_assets.core.policy import REPO_ROOT
from tests.conftest import store_at
from tests.test_real_photos import _phone_jpeg

pytestmark = pytest.mark.full
DAGSTER = str(Path(sys.executable).parent / "dagster")
CATEGORY = "o2_violence"


def _user_folder(root: Path) -> Path:
    """Two signs the policy forbids (one a sideways phone photo, one with GPS), a look-alike with a PNG text
    chunk, an animated GIF whose first frame is a forbidden sign, and five files that used to stop a step."""
    from PIL.PngImagePlugin import PngInfo

    folder = root / "images" / CATEGORY
    folder.mkdir(parents=True)
    unsafe_a, unsafe_b, lookalike = generate_demo_pool(CATEGORY, n_unsafe=2, n_safe=1, seed=3)
    (folder / "portrait.jpg").write_bytes(_phone_jpeg(unsafe_a.image, orientation=6))
    (folder / "gps.jpg").write_bytes(_phone_jpeg(unsafe_b.image, orientation=1))
    info = PngInfo()
    info.add_text("Author", "Jane Doe, 12 Example Street")
    lookalike.image.save(folder / "lookalike.png", pnginfo=info)
    frames = [unsafe_a.image.convert("P"), Image.new("P", unsafe_a.image.size, 3)]
    frames[0].save(folder / "moving.gif", save_all=True, append_images=frames[1:], duration=500)
    os.symlink("loop.png", folder / "loop.png")
    os.mkfifo(folder / "pipe.png")
    fd = os.open(os.path.join(os.fsencode(folder), b"caf\xe9.png"), os.O_WRONLY | os.O_CREAT, 0o644)
    os.write(fd, b"\x89PNG not really")
    os.close(fd)
    (folder / "cut.jpg").write_bytes(_phone_jpeg(unsafe_b.image)[:-2000])
    return root / "images"


def _materialize_all(home: Path, data: Path, images: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "DAGSTER_HOME": str(home), "SP_DATA_ROOT": str(data), "SP_SOURCE": "folder",
           "SP_SOURCE_DIR": str(images)}
    cmd = [DAGSTER, "asset", "materialize", "-m", "sp_assets", "--select", "*", "--partition", CATEGORY]
    proc = subprocess.Popen(cmd, cwd=home, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:  # the Dagster CLI ignores SIGTERM: SIGINT, then SIGKILL
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _published_images(export: Path) -> list[tuple[str, bytes]]:
    found: list[tuple[str, bytes]] = []
    for parquet in sorted(export.rglob("*.parquet")):
        frame = pl.read_parquet(parquet)
        for column in frame.columns:
            if frame.schema[column] in (pl.Struct, pl.List):  # an Image, or a list of them (the preference config)
                for value in frame[column].to_list():
                    for cell in (value if isinstance(value, list) else [value]):
                        if isinstance(cell, dict) and isinstance(cell.get("bytes"), bytes):
                            found.append((f"{parquet.name}:{column}", cell["bytes"]))
    for tar in sorted(export.rglob("*.tar")):
        with tarfile.open(tar) as archive:
            for member in archive.getmembers():
                if member.name.endswith((".png", ".jpg", ".webp")):
                    found.append((f"{tar.name}:{member.name}", archive.extractfile(member).read()))
    for name in ("*.png", "*.jpg", "*.webp"):
        found += [(str(p.relative_to(export)), p.read_bytes()) for p in (export / "gallery").rglob(name)]
    csv.field_size_limit(1 << 30)
    for tsv in sorted(export.rglob("*.tsv")):  # VLMEvalKit's files carry the images base64
        with open(tsv, newline="", encoding="utf-8") as fh:
            found += [(f"{tsv.name}:{r['index']}", base64.b64decode(r["image"])) for r in csv.DictReader(fh, delimiter="\t")]
    return found


def test_a_users_folder_goes_through_the_whole_graph_and_publishes_no_private_metadata(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    images, data = _user_folder(tmp_path), tmp_path / "data"
    done = _materialize_all(home, data, images)
    assert done.returncode == 0 and "RUN_SUCCESS" in done.stderr, done.stderr[-4000:]

    store = store_at(data)
    accepted = {r["origin_ref"]: r for r in store.rows("source_images", {"category": CATEGORY})}
    rejected = {r["origin_ref"]: r["reason"] for r in store.rows("source_rejections", {"category": CATEGORY})}
    assert set(accepted) == {f"{CATEGORY}/{n}" for n in ("portrait.jpg", "gps.jpg", "lookalike.png")}
    assert rejected == {f"{CATEGORY}/moving.gif": "animated", f"{CATEGORY}/loop.png": "symlink_loop",
                        f"{CATEGORY}/pipe.png": "not_a_file", f"{CATEGORY}/caf\\xe9.png": "bad_file_name",
                        f"{CATEGORY}/cut.jpg": "truncated"}
    run = store.query("SELECT n_in, n_out, n_rejected FROM stage_runs WHERE asset = 'source_pool' AND category = ?",
                      [CATEGORY]).rows()[-1]
    assert run == (8, 3, 5)  # in = accepted + rejected
    portrait = accepted[f"{CATEGORY}/portrait.jpg"]
    size = generate_demo_pool(CATEGORY, n_unsafe=1, n_safe=0, seed=3)[0].image.size
    assert (portrait["width"], portrait["height"]) == size and "orientation" in portrait["metadata_removed"]

    # The portrait photo went all the way: judged, edited, verified, in the benchmark.
    pair_sources = {r[0] for r in store.query("SELECT image_sha256 FROM benchmark_split WHERE category = ?",
                                              [CATEGORY]).rows()}
    assert portrait["image_sha256"] in pair_sources

    published = _published_images(data / "export")
    assert len(published) >= 4
    for where, data_bytes in published:
        with Image.open(io.BytesIO(data_bytes)) as im:
            exif = im.getexif()
            assert 0x8825 not in exif and not exif, f"{where} carries EXIF"
            assert "comment" not in im.info and "icc_profile" not in im.info, f"{where} carries a comment or ICC"
            assert not getattr(im, "text", {}), f"{where} carries text chunks"
