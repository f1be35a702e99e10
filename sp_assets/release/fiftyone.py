"""The optional FiftyOne export: a grouped dataset (one group per pair, one per look-alike) under ``fiftyone/``.

FiftyOne is an extra (``pip install 'safetypairs[fiftyone]'``); without it the export records why it
skipped this format and writes the rest.
"""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, Sequence

from sp_assets.release.columns import HALVES
from sp_assets.storage import ImageStore

FIFTYONE_EXTRA = "pip install 'safetypairs[fiftyone]'"
NOT_INSTALLED = f"fiftyone is not installed ({FIFTYONE_EXTRA} to enable this export)"
DIRECTORY = "fiftyone"
_SAMPLE_FIELDS = ("pair_id", "category", "split", "instruction", "source_score", "edit_score", "ssim_outside",
                  "embedding_cosine", "judge_profile", "editor_profile", "policy_sha256")
_LOOKALIKE_FIELDS = ("lookalike_id", "category", "split", "kind", "label_source", "judge_profile", "judge_rating",
                     "photo_id")
LOOKALIKE_SLICE = "lookalike"  # a look-alike is a group of one sample, in its own slice
Media = Callable[[str], Path]  # stored path -> the local file holding the bytes to publish


def describe(has_controls: bool, has_lookalikes: bool = False) -> str:
    """The datasheet's line for this format."""
    slices = "unsafe / safe" + (" / control" if has_controls else "") + (f" / {LOOKALIKE_SLICE}" if has_lookalikes else "")
    return (f"`fiftyone/`, a grouped dataset (slices {slices}; a look-alike is a group of one, labelled safe): "
            "`fo.Dataset.from_dir('fiftyone', dataset_type=fo.types.FiftyOneDataset)`.")


def import_fiftyone() -> tuple[ModuleType | None, str]:
    """The ``fiftyone`` module, or None and why it cannot be used."""
    if importlib.util.find_spec("fiftyone") is None:
        return None, NOT_INSTALLED
    try:
        return importlib.import_module("fiftyone"), ""
    except Exception as exc:
        # Importing fiftyone starts its database service: a broken install fails here in ways its version
        # decides (missing binary, connection refused, ...). It is an optional format: record why, go on.
        return None, f"import fiftyone failed: {type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class _SampleSpec:
    filepath: str
    half: str  # the group slice
    tags: list[str]
    label: str
    fields: dict[str, Any]


def _sample_specs(rows: Sequence[dict[str, Any]], media: Media) -> list[list[_SampleSpec]]:
    """Per pair, the samples of its group: one per half that has an image."""
    groups = []
    for r in rows:
        fields = {key: r[key] for key in _SAMPLE_FIELDS if r.get(key) is not None}
        halves = [(h, r.get("unsafe_path" if h == "unsafe" else f"{h}_path")) for h in HALVES]
        groups.append([_SampleSpec(str(media(rel)), h, [r["split"], r["category"]],
                                   "safe" if h == "safe" else "unsafe", fields) for h, rel in halves if rel])
    return groups


def _lookalike_specs(rows: Sequence[dict[str, Any]], media: Media) -> list[list[_SampleSpec]]:
    """Per look-alike, a group of one sample in the look-alike slice, labelled safe (the hard negatives)."""
    return [[_SampleSpec(str(media(r["image_path"])), LOOKALIKE_SLICE, [r["split"], r["category"], LOOKALIKE_SLICE],
                         "safe", {key: r[key] for key in _LOOKALIKE_FIELDS if r.get(key) is not None})]
            for r in rows if r.get("image_path")]


def write_fiftyone(root: Path, rows: Sequence[dict[str, Any]], images: ImageStore,
                   lookalikes: Sequence[dict[str, Any]] = (), media: Media | None = None) -> tuple[Path | None, str]:
    """Export the rows under ``root/fiftyone``: (that folder, "") or (None, why: NOT_INSTALLED or the failure).

    FiftyOne copies each sample's file: ``media`` names the file with the bytes to publish for a stored path
    (``StoredImages.local_file``: a clean copy where the stored file holds metadata); default the stored file.
    """
    fo, why = import_fiftyone()
    if fo is None:
        return None, why
    if not images.is_local:  # FiftyOne samples point at files on this machine
        return None, f"images are on {images.root}: FiftyOne needs them in a local folder (set SP_IMAGES_URL to one)"
    dest = root / DIRECTORY
    media = media or images.path
    groups = _sample_specs(rows, media) + _lookalike_specs(lookalikes, media)
    try:
        _export(fo, dest, groups)
    except Exception as exc:
        # Only FiftyOne's own calls run here (its dataset, its database, its media export): their failures
        # are not ours to enumerate, and an optional format must not cost the release. The error is
        # reported with its type in the skipped formats and the datasheet.
        shutil.rmtree(dest, ignore_errors=True)
        return None, f"export failed: {type(exc).__name__}: {exc}"
    return dest, ""


def _export(fo: Any, dest: Path, groups: Sequence[Sequence[_SampleSpec]]) -> None:
    """A grouped FiftyOne dataset: one group per pair, slices 'unsafe', 'safe' (and 'control'), and one group
    per look-alike in the 'lookalike' slice."""
    dataset = fo.Dataset(f"safetypairs-export-{uuid.uuid4().hex[:12]}")
    try:
        dataset.add_group_field("group", default="unsafe")
        samples = []
        for specs in groups:
            group = fo.Group()
            for spec in specs:
                sample = fo.Sample(filepath=spec.filepath, group=group.element(spec.half), tags=spec.tags)
                sample["ground_truth"] = fo.Classification(label=spec.label)
                for key, value in spec.fields.items():
                    sample[key] = value
                samples.append(sample)
        if samples:
            dataset.add_samples(samples)
        dataset.export(export_dir=str(dest), dataset_type=fo.types.FiftyOneDataset, export_media=True)
    finally:
        dataset.delete()
