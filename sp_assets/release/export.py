"""Export the benchmark in the formats the field uses, with a datasheet and a browsable gallery.

``export_benchmark`` reads every benchmark pair in the database (all categories) with its lineage and
writes one folder:

    <out_dir>/README.md                          Hugging Face dataset card (YAML front matter + datasheet)
    <out_dir>/data/<split>-00000-of-0000N.parquet  image columns as ``datasets.Image`` (bytes of the stored files)
    <out_dir>/lookalikes/<split>-00000-of-0000N.parquet  the look-alikes (safe images; the card's ``lookalikes`` config)
    <out_dir>/webdataset/<split>-000000.tar        one sample per pair: <key>.unsafe.png, <key>.safe.png, <key>.json
    <out_dir>/webdataset/lookalikes/<split>-000000.tar  one sample per look-alike: <key>.image.png, <key>.json
    <out_dir>/preference/, sft/                    training configs: TRL preference pairs, LlavaGuard-style SFT
    <out_dir>/vlmevalkit/, lmms-eval/, inspect-ai/  the benchmark for three evaluation harnesses (``harness``)
    <out_dir>/items.csv                            every image with its id, for ``python -m sp_assets.evaluate score``
    <out_dir>/external_guards/<name>.json          guards scored from a harness's predictions (kept on re-export)
    <out_dir>/gallery/index.html                   static, offline; unsafe halves blurred until clicked
    <out_dir>/fiftyone/                            only with the ``fiftyone`` extra installed
    <out_dir>/export_manifest.json                 counts, the images cleaned here, the sha256 of every file written

The folder is built under a temporary name next to ``out_dir`` and renamed into place, under a lock,
so readers never see half an export and two exports never interleave. The same database gives the
same bytes (rows sorted, fixed shard names, no timestamps; the FiftyOne export excepted).

Nothing private goes out by default: every image passes through ``publishable`` (metadata removed, ICC
converted to sRGB; clean files unchanged), reviewers appear as pseudonyms keyed by a secret kept in the
folder holding ``out_dir`` (the data root), and free-text review notes are left out.

Load the Parquet with one line::

    datasets.load_dataset("parquet", data_dir="<out_dir>/data")        # the pairs
    datasets.load_dataset("parquet", data_dir="<out_dir>/lookalikes")  # the look-alikes
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from filelock import FileLock

import sp_assets.release.gallery as gallery_page
import sp_assets.release.parquet as parquet
import sp_assets.release.external_guards as external
import sp_assets.release.harness as harness
import sp_assets.release.policy_pairs as policy_pairs
import sp_assets.release.preference as preference
import sp_assets.release.sft as sft
import sp_assets.release.vlmevalkit as vlmevalkit
import sp_assets.release.webdataset as wds
from sp_assets.release.columns import (
    Columns, count_pairs, export_columns, group_by_split, lookalike_columns, n_controls, order_pairs, with_categories,
)
from sp_assets.release.datasheet import DatasheetFacts, write_datasheet
from sp_assets.release.fiftyone import NOT_INSTALLED, write_fiftyone
from sp_assets.release.fiftyone import describe as describe_fiftyone
from sp_assets.release.inputs import ExportInputs, read_inputs
from sp_assets.release.markdown import md_text
from sp_assets.release.publishable import CleanedAtExport, removed_counts
from sp_assets.release.report import ExportReport, report_from_manifest
from sp_assets.release.reviewers import ReviewerChoice, publish_reviewers
from sp_assets.release.shards import OnPair, ShardWriter, StoredImages, write_shards
from sp_assets.core.hashing import sha256_file, sha256_json
from sp_assets.storage import ImageStore, Store

EMPTY_WARNING = ("the benchmark is empty: data/train-00000-of-00001.parquet holds the schema and no rows "
                 "(datasets cannot load a Parquet file without rows)")


def export_name(origins: Iterable[str], policy_path: str | os.PathLike[str] | None) -> str:
    """The export's name when none is given: ``safetypairs-<origins>-<policy file stem>``.

    ``origins`` are where the exported sources came from (``source_images.origin``: 'demo', 'folder'),
    joined in sorted order; the policy file's stem names the policy (``policies/strict_weapons.yaml`` ->
    ``strict_weapons``). A part that is not known (no sources, no policy file) is left out. Examples:
    ``safetypairs-demo-default``, ``safetypairs-demo-folder-strict_weapons``.
    """
    parts = ["safetypairs", *sorted({o for o in origins if o})]
    if policy_path:
        parts.append(Path(policy_path).stem)
    return "-".join(parts)


@dataclass(frozen=True)
class _Options:
    shard_size: int
    webdataset: bool
    gallery: bool
    show_unsafe: bool
    fiftyone: bool
    license: str
    reviewer_names: bool = False
    review_notes: bool = False

    @property
    def reviewers(self) -> ReviewerChoice:
        return ReviewerChoice(self.reviewer_names, self.review_notes)


@dataclass
class _Job:
    """One export: its settings and the rows it writes, fixed before any file is written."""

    name: str
    inputs: ExportInputs
    policy: Any
    thresholds: Mapping[str, Any]
    options: _Options
    key_dir: Path  # where the reviewer pseudonym key is kept (never inside the export)
    rows: list[dict[str, Any]] = field(default_factory=list)
    columns: Columns = ()
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    rows_by_split: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    lookalikes: list[dict[str, Any]] = field(default_factory=list)
    lookalike_columns: Columns = ()
    lookalike_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    external_guards: list[dict[str, Any]] = field(default_factory=list)  # the records of the export it replaces

    def prepare(self) -> "_Job":
        """Rows with their category id and title, in export order, counted and grouped by split."""
        choice = self.options.reviewers
        pairs = publish_reviewers(with_categories(self.inputs.pairs, self.policy), choice, self.key_dir)
        self.warnings += [f"pair {p['pair_id']} ({p['category']}) has no row in pair_lineage; its provenance "
                          "columns are empty" for p in pairs if p.get("_has_lineage") is False]
        self.rows = order_pairs(pairs)
        types = {k: v for k, v in self.inputs.types.items() if k not in choice.withheld_columns}
        self.columns = export_columns(types, self.inputs.has_controls)
        self.counts = count_pairs(self.rows)
        self.rows_by_split = group_by_split(self.rows)
        if not self.rows_by_split:
            self.rows_by_split = {"train": []}
            self.warnings.append(EMPTY_WARNING)
        self.lookalikes = order_pairs(with_categories(self.inputs.lookalikes, self.policy, kind="lookalike"))
        self.lookalike_columns = lookalike_columns(self.inputs.lookalike_types) if self.lookalikes else ()
        self.lookalike_counts = count_pairs(self.lookalikes)
        return self


@dataclass
class _Written:
    """What landed in the temporary folder: format -> split -> shards, pages, and why formats were skipped."""

    shards: dict[str, dict[str, list[Path]]]
    datasheet: Path
    gallery: Path | None
    fiftyone: Path | None
    skipped: dict[str, str]
    cleaned: dict[str, CleanedAtExport] = field(default_factory=dict)  # stored sha256 -> how, sorted by sha256


def export_benchmark(store: Store, images: ImageStore, out_dir: str | os.PathLike[str], *, policy: Any,
                     thresholds: Mapping[str, Any], name: str | None = None,
                     shard_size: int = 500, webdataset: bool = True, gallery: bool = True, show_unsafe: bool = False,
                     fiftyone: bool = True, license: str = "other", reviewer_names: bool = False,
                     review_notes: bool = False, key_dir: str | os.PathLike[str] | None = None) -> ExportReport:
    """Export every benchmark pair in the database (all categories) to ``out_dir``; see the module doc.

    The profiles behind the pairs come from the data (their rows' lineage). ``thresholds``: the
    acceptance thresholds in force (``PipelineSettings.thresholds()``). ``name``: defaults to
    ``export_name`` of the sources' origins and the policy file. ``out_dir`` is replaced as a whole:
    keep nothing else in it.

    Reviewers are published as pseudonyms unless ``reviewer_names``, and review notes only with
    ``review_notes`` (the datasheet says which). ``key_dir``: where the pseudonym key is kept, by default the
    folder that holds ``out_dir`` (the data root, for the pipeline's ``<data_root>/export``).
    """
    started = time.perf_counter()
    if shard_size < 1:
        raise ValueError(f"shard_size must be at least 1, got {shard_size}")
    out_dir = Path(out_dir).expanduser().resolve()
    key_folder = _key_folder(out_dir, key_dir)
    options = _Options(shard_size, webdataset, gallery, show_unsafe, fiftyone, license, reviewer_names, review_notes)
    with _lock(out_dir.parent / f".{out_dir.name}.lock"):
        inputs = read_inputs(store)  # every query happens here; the connection is closed afterwards
        job = _Job(name or export_name(inputs.origins, getattr(policy, "path", None)), inputs, policy,
                   thresholds, options, key_folder).prepare()
        unchanged = _unchanged_export(out_dir, job)
        if unchanged is not None:
            return unchanged
        job.external_guards = external.read_records(out_dir)
        tmp = out_dir.parent / f".{out_dir.name}.tmp-{uuid.uuid4().hex[:8]}"
        tmp.mkdir(parents=True)
        try:
            written = _write_release(tmp, job, images)
            _write_manifest(tmp, job, written)
            _swap_into_place(tmp, out_dir)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return _report(out_dir, tmp, job, written, time.perf_counter() - started)


EXPORT_VERSION = "5"  # bump when the export's code writes different files for the same inputs


def _key_folder(out_dir: Path, key_dir: str | os.PathLike[str] | None) -> Path:
    folder = out_dir.parent if key_dir is None else Path(key_dir).expanduser().resolve()
    if folder.is_relative_to(out_dir):
        raise ValueError(f"key_dir {folder} is inside the export {out_dir}: the reviewer pseudonym key would be "
                         "published with it. Keep it outside, as in the data root (the default).")
    return folder


def _fingerprint(job: _Job) -> str:
    """What the export is made from, less the run ids and times (a re-run that changes nothing else
    keeps the export it finds, with the run ids of the run that made its content)."""
    def stable(row: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if not k.endswith("run_id") and k != "created_at"}

    inputs = {k: v for k, v in vars(job.inputs).items() if k not in ("pairs", "types", "lookalikes", "lookalike_types")}
    return sha256_json({"version": EXPORT_VERSION, "name": job.name, "rows": [stable(r) for r in job.rows],
                        "columns": [(c, str(t)) for c, t in job.columns], "inputs": inputs,
                        "lookalikes": [stable(r) for r in job.lookalikes],
                        "lookalike_columns": [(c, str(t)) for c, t in job.lookalike_columns],
                        "policy": getattr(job.policy, "sha256", None),
                        "thresholds": job.thresholds, "options": vars(job.options)})


def _unchanged_export(out_dir: Path, job: _Job) -> ExportReport | None:
    """The report of the export already in ``out_dir`` when it was made from the same inputs, else None."""
    manifest_path = out_dir / "export_manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if manifest.get("inputs_sha256") != _fingerprint(job) or not all(
            (out_dir / f).is_file() for f in manifest.get("files", {})):
        return None
    return report_from_manifest(out_dir, manifest, job.warnings)


def _write_release(tmp: Path, job: _Job, images: ImageStore) -> _Written:
    """Every format, the gallery and the datasheet, under ``tmp``."""
    opts = job.options
    formats = {"Parquet": parquet.describe(job.inputs.has_controls, bool(job.lookalikes))}
    skipped: dict[str, str] = {}
    copies = gallery_page.GalleryImages(tmp) if opts.gallery else None
    stored = StoredImages(images)  # one for every format: it remembers the images it had to clean
    shards = _write_shards(tmp, job, stored, formats, skipped, copies.add if copies else lambda pair, blobs: None)
    kept = _write_harness_files(tmp, job, stored, formats)
    if job.inputs.policy_pairs:
        policy_pairs.write_policy_pairs(tmp, job.inputs.policy_pairs, job.policy, stored.read)
        formats["Policy pairs"] = policy_pairs.describe()
    gallery_path = None
    if copies:
        gallery_path = gallery_page.write_gallery(tmp, job.name, job.rows, copies.files, job.counts, job.policy,
                                                  opts.show_unsafe, job.lookalikes)
        formats["Gallery"] = gallery_page.describe(opts.show_unsafe)
    else:
        skipped["gallery"] = "turned off (gallery=False)"
    fiftyone_dir = _write_fiftyone(tmp, job, stored, formats, skipped)
    cleaned = {c.stored_sha256: c for c in sorted(stored.cleaned.values(), key=lambda c: c.stored_sha256)}
    facts = DatasheetFacts(job.name, job.rows, job.columns, job.counts, job.inputs, job.policy,
                           job.thresholds, formats, opts.license, cleaned, opts.reviewers, kept)
    return _Written(shards, write_datasheet(tmp, facts), gallery_path, fiftyone_dir, skipped, cleaned)


def _write_harness_files(tmp: Path, job: _Job, stored: StoredImages, formats: dict[str, str]) -> list[Any]:
    """The VLMEvalKit TSVs, ``items.csv``, the lmms-eval and Inspect tasks, and the external guards of the
    export being replaced that were scored on the same items (the others are dropped with a warning)."""
    looks = group_by_split(job.lookalikes)
    items = vlmevalkit.write_vlmevalkit(tmp, job.rows_by_split, looks, stored.read)
    formats["VLMEvalKit"] = vlmevalkit.describe()
    items_sha256 = sha256_file(harness.write_items(tmp, items))
    splits = sorted(set(job.rows_by_split) | set(looks))
    harness.write_tasks(tmp, job.name, splits)
    formats.update(harness.describe(splits))
    kept, dropped = external.carry_over(job.external_guards, items_sha256)
    job.warnings += dropped
    external.write_records(tmp, kept)
    return kept


def _write_shards(tmp: Path, job: _Job, stored: StoredImages, formats: dict[str, str], skipped: dict[str, str],
                  on_row: OnPair) -> dict[str, dict[str, list[Path]]]:
    """The pairs' and look-alikes' shards of every format: format -> split -> paths."""
    has_controls, has_lookalikes, opts = job.inputs.has_controls, bool(job.lookalikes), job.options
    sft_pairs, sft_lookalikes = sft.shard_classes(job.policy)
    shard_formats: dict[str, type[ShardWriter]] = {"parquet": parquet.ParquetShard,
                                                   "preference": preference.PreferenceShard, "sft": sft_pairs}
    lookalike_formats: dict[str, type[ShardWriter]] = {"parquet": parquet.LookalikeParquetShard,
                                                       "preference": preference.LookalikePreferenceShard,
                                                       "sft": sft_lookalikes}
    formats["Preference (TRL)"] = preference.describe()
    formats["SFT (LlavaGuard)"] = sft.describe()
    if opts.webdataset:
        shard_formats["webdataset"] = wds.WebDatasetShard
        lookalike_formats["webdataset"] = wds.LookalikeWebDatasetShard
        formats["WebDataset"] = wds.describe(has_controls, has_lookalikes)
    else:
        skipped["webdataset"] = "turned off (webdataset=False)"
    shards = write_shards(tmp, job.rows_by_split, job.columns, shard_formats, stored, opts.shard_size, on_row)
    if has_lookalikes:  # their own files: the pair files load as they always did
        looks = write_shards(tmp, group_by_split(job.lookalikes), job.lookalike_columns, lookalike_formats,
                             stored, opts.shard_size, on_row)
        shards.update({f"{fmt}_lookalikes": by_split for fmt, by_split in looks.items()})
    return shards


def _write_fiftyone(tmp: Path, job: _Job, stored: StoredImages, formats: dict[str, str],
                    skipped: dict[str, str]) -> Path | None:
    """The optional FiftyOne export; a failure is recorded in ``skipped`` and the datasheet, not raised."""
    if not job.options.fiftyone:
        skipped["fiftyone"] = "turned off (fiftyone=False)"
        return None
    staging = tmp / ".fiftyone-media"  # clean copies for FiftyOne to copy in; not part of the export
    try:
        dest, why = write_fiftyone(tmp, job.rows, stored.images, job.lookalikes,
                                   media=lambda rel: stored.local_file(rel, staging))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if dest is None:
        skipped["fiftyone"] = why
        if why != NOT_INSTALLED:  # it failed: say so where the formats are listed
            formats["FiftyOne"] = f"not written: {md_text(why)}"
        return None
    formats["FiftyOne"] = describe_fiftyone(job.inputs.has_controls, bool(job.lookalikes))
    return dest


def _write_manifest(tmp: Path, job: _Job, written: _Written) -> None:
    """``export_manifest.json``: counts, the images cleaned at export, and the sha256 of every file but
    FiftyOne's (it is not deterministic)."""
    files = sorted(p for p in tmp.rglob("*") if p.is_file() and "fiftyone" not in p.relative_to(tmp).parts)
    cleaned = list(written.cleaned.values())
    manifest = {
        "name": job.name, "n_pairs": len(job.rows), "counts": job.counts, "n_controls": n_controls(job.rows),
        "n_lookalikes": len(job.lookalikes), "lookalike_counts": job.lookalike_counts,
        "policy_sha256": getattr(job.policy, "sha256", None), "skipped": dict(written.skipped),
        "warnings": job.warnings, "reviewer_names": job.options.reviewer_names,
        "review_notes": job.options.review_notes,
        "cleaned_at_export": {"n_images": len(cleaned), "removed": removed_counts(cleaned),
                              "images": {sha: c.as_dict() for sha, c in written.cleaned.items()}},
        "files": {p.relative_to(tmp).as_posix(): sha256_file(p) for p in files},
        "inputs_sha256": _fingerprint(job),
    }
    (tmp / "export_manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n", encoding="utf-8")


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename ``tmp`` to ``out_dir``, moving a previous export aside first and deleting it after."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}"
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _lock(path: Path) -> FileLock:
    """One export at a time per folder, across processes (two runs finishing together take turns)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(path)


def _report(out_dir: Path, tmp: Path, job: _Job, written: _Written, seconds: float) -> ExportReport:
    def final(p: Path) -> Path:
        return out_dir / p.relative_to(tmp)

    def shards(fmt: str) -> dict[str, list[Path]]:
        return {s: [final(p) for p in ps] for s, ps in written.shards.get(fmt, {}).items()}

    return ExportReport(
        out_dir=out_dir, name=job.name, n_pairs=len(job.rows), counts=job.counts, n_controls=n_controls(job.rows),
        parquet_files=shards("parquet"), webdataset_files=shards("webdataset"), datasheet=final(written.datasheet),
        gallery=final(written.gallery) if written.gallery else None,
        fiftyone_dir=final(written.fiftyone) if written.fiftyone else None,
        manifest=out_dir / "export_manifest.json", skipped=written.skipped, warnings=job.warnings, seconds=seconds,
        n_lookalikes=len(job.lookalikes), lookalike_counts=job.lookalike_counts,
        lookalike_parquet_files=shards("parquet_lookalikes"),
        lookalike_webdataset_files=shards("webdataset_lookalikes"), n_cleaned_at_export=len(written.cleaned))
