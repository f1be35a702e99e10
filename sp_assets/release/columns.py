"""The exported columns: their order, Arrow types and ``datasets`` features, and each row's values."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import polars as pl
import pyarrow as pa

from sp_assets.core.splitting import SPLITS

LABEL_NAMES = ["safe", "unsafe"]  # ClassLabel order: 0 = safe, 1 = unsafe
HALVES = ("unsafe", "safe", "control")
LOOKALIKE_IMAGE = "image"  # a look-alike's one image: column ``image``, read from ``image_path`` / ``image_sha256``

Columns = Sequence[tuple[str, pa.DataType]]
Blob = tuple[bytes, str]  # the stored file's bytes and its name in the export (<sha256><suffix>)
Blobs = Mapping[str, Blob | None]  # half -> its image, None where the pair has none

# Columns a reader sees first, in this order; every other column follows in query order.
LEADING_COLUMNS = [
    "pair_id", "category", "category_id", "category_title", "split", "kind",
    "unsafe_image", "safe_image", "control_image",
    "unsafe_label", "safe_label", "control_label",
    "instruction", "replacement", "source_sha256", "safe_sha256", "control_sha256", "photo_id",
]
# The look-alikes' columns (their own files), readers' columns first.
LOOKALIKE_COLUMNS = [
    "lookalike_id", "category", "category_id", "category_title", "split", "kind", "image", "label",
    "label_source", "judge_profile", "judge_rating", "image_sha256", "photo_id", "origin", "source_file", "image_path",
]
# Columns of an empty benchmark (no table yet): enough for a Parquet file with the image features.
EMPTY_TYPES = {"pair_id": pa.string(), "category": pa.string(), "split": pa.string()}
IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])

COLUMN_NOTES: dict[str, str] = {
    "pair_id": "sha256 of (source, edit): the pair's identity",
    "category": "policy category slug",
    "category_id": "policy category id (O1 ...)",
    "category_title": "policy category title",
    "split": "train / validation / test (grouped by photograph, the same split in every category)",
    "kind": "'pair' (counterfactual pair) or 'lookalike' (a safe source image of the category: hard negative)",
    "replacement": "the text the instruction put in place of the violating text (null for prose instructions)",
    "photo_id": "the underlying photograph (demo photo, manifest 'photo' column, else the image sha256)",
    "lookalike_id": "sha256 of (category, image): the look-alike's identity",
    "image": "the look-alike image, the stored file's bytes, re-encoded only if it held metadata (datasets.Image)",
    "label": "ClassLabel, always 'safe' (0) for a look-alike",
    "label_source": "'human' (the source's own label) or 'judge' (the judge rated it safe; no human label)",
    "judge_rating": "the judge's rating of the look-alike: 'unsafe' there is over-flagging by the judge",
    "image_sha256": "sha256 of the look-alike image file",
    "image_path": "path of the look-alike file under the pipeline's data root",
    "unsafe_image": ("the unsafe half: the source image, the stored file's bytes, re-encoded only if it held "
                     "metadata (datasets.Image)"),
    "safe_image": ("the safe half: the counterfactual edit, the stored file's bytes, re-encoded only if it held "
                   "metadata (datasets.Image)"),
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
    "reviewer": "who reviewed the pair: a pseudonym (reviewer-<10 hex digits>) unless names were published",
    "review_note": "the reviewer's note (published only with the export option review_notes)",
}

_ARROW_TYPES = {pl.Float64: pa.float64(), pl.Float32: pa.float32(), pl.Int64: pa.int64(), pl.Int32: pa.int32(),
                pl.Int16: pa.int16(), pl.Int8: pa.int8(), pl.Boolean: pa.bool_()}
_FEATURE_DTYPES = {"string": "string", "double": "float64", "float": "float32", "int64": "int64", "int32": "int32",
                   "int16": "int16", "int8": "int8", "bool": "bool"}


def arrow_type(dtype: Any) -> pa.DataType | None:
    """Arrow type for a polars column; None drops it (timestamps vary between runs)."""
    if dtype == pl.Utf8 or dtype == pl.Null:
        return pa.string()
    for pl_type, pa_type in _ARROW_TYPES.items():
        if dtype == pl_type:
            return pa_type
    if isinstance(dtype, pl.Datetime) or dtype == pl.Date:
        return None
    return pa.string()


def category_info(policy: Any, slug: str) -> tuple[str, str]:
    """(id, title) of a category; ("", slug) for a category the policy no longer has."""
    try:
        category = policy.category(slug)
    except KeyError:
        return "", slug
    return category.id, category.title


def export_columns(types: Mapping[str, pa.DataType], has_controls: bool) -> list[tuple[str, pa.DataType]]:
    """The columns of the export, readers' columns first, from the queried column types."""
    if not types:
        types, has_controls = EMPTY_TYPES, False
    special: dict[str, pa.DataType] = {
        "category_id": pa.string(), "category_title": pa.string(), "kind": pa.string(),
        "unsafe_image": IMAGE, "safe_image": IMAGE, "unsafe_label": pa.int64(), "safe_label": pa.int64(),
    }
    if has_controls:
        special.update({"control_image": IMAGE, "control_label": pa.int64()})
    all_types = {**types, **special}
    hidden = {"_has_lineage", "control_candidate_id"} if not has_controls else {"_has_lineage"}
    order = [c for c in LEADING_COLUMNS + ["unsafe_path", "safe_path", "control_path"] if c in all_types]
    order += [c for c in types if c not in order and c not in hidden]
    return [(c, all_types[c]) for c in order]


def lookalike_columns(types: Mapping[str, pa.DataType]) -> list[tuple[str, pa.DataType]]:
    """The columns of the look-alike files, readers' columns first, from the queried column types."""
    special = {"category_id": pa.string(), "category_title": pa.string(), "kind": pa.string(),
               LOOKALIKE_IMAGE: IMAGE, "label": pa.int64()}
    all_types = {**types, **special}
    order = [c for c in LOOKALIKE_COLUMNS if c in all_types]
    order += [c for c in types if c not in order]
    return [(c, all_types[c]) for c in order]


def image_half(column: str) -> str | None:
    """The half an image column holds (``safe_image`` -> 'safe', a look-alike's ``image`` -> 'image')."""
    if column == LOOKALIKE_IMAGE:
        return LOOKALIKE_IMAGE
    return column[: -len("_image")] if column.endswith("_image") else None


def image_halves(columns: Columns) -> list[str]:
    """The halves that have an image column, in HALVES order (a look-alike's one image last)."""
    names = {n for n, _ in columns}
    return [h for h in HALVES if f"{h}_image" in names] + ([LOOKALIKE_IMAGE] if LOOKALIKE_IMAGE in names else [])


def is_label(column: str) -> bool:
    return column == "label" or column.endswith("_label")


def feature(name: str, arrow: pa.DataType) -> dict[str, Any]:
    """The ``datasets`` feature of one column, as stored in the Parquet schema metadata."""
    if image_half(name):
        return {"_type": "Image"}
    if is_label(name):
        return {"names": LABEL_NAMES, "_type": "ClassLabel"}
    return {"dtype": _FEATURE_DTYPES[str(arrow)], "_type": "Value"}


def row_key(row: Mapping[str, Any]) -> str:
    """A row's identity in the export: its pair id, or a look-alike's id."""
    return row["pair_id"] if row.get("pair_id") else row["lookalike_id"]


def features(columns: Columns) -> dict[str, Any]:
    return {name: feature(name, t) for name, t in columns}


def row_values(pair: Mapping[str, Any], blobs: Blobs, columns: Columns) -> dict[str, Any]:
    """One row's cells: images as {bytes, path}, labels as ClassLabel ids, every other column as queried.
    A pair's halves have fixed labels; a look-alike's ``label`` is the one it carries ('safe')."""
    out = {}
    for name, _ in columns:
        half = image_half(name)
        if half:
            blob = blobs.get(half)
            out[name] = None if blob is None else {"bytes": blob[0], "path": blob[1]}
        elif name in ("unsafe_label", "control_label"):
            out[name] = 1 if name == "unsafe_label" or blobs.get("control") is not None else None
        elif name == "safe_label":
            out[name] = 0
        elif name == "label":
            out[name] = LABEL_NAMES.index(pair["label"])
        elif name == "kind":
            out[name] = pair.get("kind") or "pair"
        else:
            out[name] = pair.get(name)
    return out


def with_categories(pairs: Sequence[dict[str, Any]], policy: Any, kind: str = "pair") -> list[dict[str, Any]]:
    """The rows with their category's id and title from the policy, and their kind ('pair', 'lookalike')."""
    out = []
    for p in pairs:
        cid, title = category_info(policy, p["category"])
        out.append({**p, "category_id": cid, "category_title": title, "kind": kind})
    return out


def order_pairs(pairs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows in export order: by split (train, validation, test), category, pair (or look-alike) id."""
    rank = {s: i for i, s in enumerate(SPLITS)}
    return sorted(pairs, key=lambda p: (rank.get(p["split"], len(SPLITS)), str(p["split"]), p["category"], row_key(p)))


def count_pairs(rows: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """category -> split -> pairs, categories sorted, every split present."""
    counts: dict[str, dict[str, int]] = {}
    for r in sorted(rows, key=lambda r: r["category"]):
        counts.setdefault(r["category"], {s: 0 for s in SPLITS})
        counts[r["category"]][r["split"]] = counts[r["category"]].get(r["split"], 0) + 1
    return counts


def group_by_split(rows: Sequence[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["split"], []).append(r)
    return out


def n_controls(rows: Sequence[Mapping[str, Any]]) -> int:
    return sum(1 for r in rows if r.get("control_sha256"))
