"""The static gallery: ``gallery/index.html`` with every pair side by side, offline, unsafe halves blurred,
and the look-alikes (safe images of each category) after them.

The page is ``static/gallery.html.j2`` (cards as Jinja macros) with ``gallery.css`` and ``gallery.js``
inlined; the images are copies of the stored files under ``gallery/images/``.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping, Sequence

from PIL import Image, UnidentifiedImageError

from sp_assets.core.formatting import fmt
from sp_assets.core.html import render_page
from sp_assets.core.splitting import SPLITS
from sp_assets.release.columns import HALVES, LOOKALIKE_IMAGE, Blobs, category_info, row_key

EAGER_CARDS = 8  # gallery cards whose images load at once; the rest load as they scroll into view
GalleryFile = tuple[str, tuple[int, int] | None]  # src relative to the page, (width, height) if readable

# half -> (label, what it is, the score shown under it)
_CAPTIONS = {"unsafe": ("unsafe", "source", "source_score"), "safe": ("safe", "edit", "edit_score"),
             "control": ("unsafe", "control (null edit)", None)}
_SCORES = [("source P(unsafe)", "source_score"), ("edit P(unsafe)", "edit_score"), ("SSIM outside", "ssim_outside"),
           ("PSNR outside (dB)", "psnr_outside"), ("embedding cosine", "embedding_cosine"),
           ("quality", "quality_score")]
_PROVENANCE = ["pair_id", "source_file", "origin", "source_sha256", "safe_sha256", "control_sha256", "policy_sha256",
               "judge_profile", "judge_config_sha256", "judge_model", "judge_rationale",
               "writer_profile", "writer_config_sha256", "editor_profile", "editor_config_sha256", "editor_model",
               "editor_revision", "seed", "candidate_id", "control_candidate_id", "n_accepted_candidates",
               "split_config_sha256", "source_run_id", "label_run_id", "instruction_run_id", "edit_run_id",
               "verify_run_id", "split_run_id"]
_SEARCHED = ("pair_id", "category", "category_title", "instruction", "source_file", "editor_profile", "judge_profile")
_LOOKALIKE_PROVENANCE = ["lookalike_id", "source_file", "origin", "image_sha256", "photo_id", "label_source",
                         "judge_profile", "judge_rating", "split_config_sha256"]
_LOOKALIKE_SEARCHED = ("lookalike_id", "category", "category_title", "source_file", "label_source", "judge_rating")


def describe(show_unsafe: bool) -> str:
    """The datasheet's line for the gallery."""
    return ("`gallery/index.html`, a static page (no network) with every pair side by side and the look-alikes "
            "after them, filters by category and split; unsafe images blurred until clicked"
            + (" (exported unblurred: show_unsafe)" if show_unsafe else "") + ".")


def image_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) of an image file's bytes; None if PIL cannot read it (the page then omits the size)."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except (UnidentifiedImageError, OSError):
        return None


class GalleryImages:
    """Copies each pair's images into ``gallery/images/`` (once per file) and remembers where they went."""

    def __init__(self, root: Path):
        self.folder = root / "gallery" / "images"
        self.folder.mkdir(parents=True)
        self.files: dict[str, dict[str, GalleryFile]] = {}  # pair_id (lookalike_id) -> half -> file

    def add(self, pair: Mapping[str, Any], blobs: Blobs) -> None:
        entry = self.files.setdefault(row_key(pair), {})
        for half, blob in blobs.items():
            if blob is None:
                continue
            dest = self.folder / blob[1]
            if not dest.exists():
                dest.write_bytes(blob[0])
            entry[half] = (f"images/{blob[1]}", image_size(blob[0]))


def _figures(pair: Mapping[str, Any], files: Mapping[str, GalleryFile], show_unsafe: bool,
             eager: bool) -> list[dict[str, Any]]:
    figures = []
    for half in HALVES:
        if half not in files:
            continue
        src, size = files[half]
        label, what, score_key = _CAPTIONS[half]
        score = pair.get(score_key) if score_key else None
        sensitive = label == "unsafe"
        figures.append({"half": half, "src": src, "size": size, "label": label, "what": what,
                        "sensitive": sensitive, "blur": sensitive and not show_unsafe, "eager": eager,
                        "score": None if score is None else fmt(score, 2)})
    return figures


def card(pair: Mapping[str, Any], files: Mapping[str, GalleryFile], show_unsafe: bool, eager: bool) -> dict[str, Any]:
    """What one pair's card shows; ``eager`` cards load their images at once (the first screenful)."""
    category_label = " ".join(x for x in (pair.get("category_id"), pair.get("category_title")) if x)
    return {
        "pair_id": pair["pair_id"], "category": pair["category"], "split": pair["split"],
        "search": " ".join(str(pair.get(k) or "") for k in _SEARCHED).lower(),
        "category_label": category_label or pair["category"],
        "editor_profile": str(pair.get("editor_profile") or ""),
        "figures": _figures(pair, files, show_unsafe, eager),
        "instruction": str(pair.get("instruction") or ""),
        "scores": [(label, fmt(pair[key])) for label, key in _SCORES if pair.get(key) is not None],
        "provenance": [(k, str(pair[k])) for k in _PROVENANCE if pair.get(k) not in (None, "")],
    }


def lookalike_card(row: Mapping[str, Any], files: Mapping[str, GalleryFile], eager: bool) -> dict[str, Any]:
    """What one look-alike's card shows: its image (safe: never blurred), its label's source and the judge's rating."""
    src, size = files[LOOKALIKE_IMAGE]
    judged = f"judge: {row['judge_rating']}" if row.get("judge_rating") else "not judged"
    figure = {"half": "lookalike", "src": src, "size": size, "label": "safe", "what": f"look-alike ({judged})",
              "sensitive": False, "blur": False, "eager": eager, "score": None}
    category_label = " ".join(x for x in (row.get("category_id"), row.get("category_title")) if x)
    return {
        "lookalike_id": row["lookalike_id"], "category": row["category"], "split": row["split"],
        "search": " ".join(str(row.get(k) or "") for k in _LOOKALIKE_SEARCHED).lower(),
        "category_label": category_label or row["category"], "label_source": str(row.get("label_source") or ""),
        "over_flagged": row.get("judge_rating") == "unsafe", "figure": figure,
        "provenance": [(k, str(row[k])) for k in _LOOKALIKE_PROVENANCE if row.get(k) not in (None, "")],
    }


def _warning(show_unsafe: bool) -> str:
    return ("Content warning: this page shows images that violate a safety policy. "
            + ("Unsafe images are shown unblurred (exported with show_unsafe)." if show_unsafe else
               "Unsafe images are blurred; click one to show it, or tick \u201cshow unsafe images\u201d."))


def write_gallery(root: Path, name: str, rows: Sequence[dict[str, Any]], files: Mapping[str, Mapping[str, GalleryFile]],
                  counts: Mapping[str, Mapping[str, int]], policy: Any, show_unsafe: bool,
                  lookalikes: Sequence[dict[str, Any]] = ()) -> Path:
    """Write ``gallery/index.html`` for the pairs and look-alikes (images already copied by ``GalleryImages``)."""
    categories = sorted({r["category"] for r in [*rows, *lookalikes]})
    category_options = [(c, f'{" ".join(filter(None, category_info(policy, c))) or c} ({sum(counts.get(c, {}).values())})')
                        for c in categories]
    split_options = [(s, f"{s} ({sum(v.get(s, 0) for v in counts.values())})") for s in SPLITS]
    page = render_page(
        "sp_assets.release", "gallery.html.j2",
        name=name, n_pairs=len(rows), n_categories=len(categories),
        policy_name=str(getattr(policy, "name", "")), policy_sha256=str(getattr(policy, "sha256", ""))[:12],
        category_options=category_options, split_options=split_options, show_unsafe=show_unsafe,
        warning=_warning(show_unsafe),
        cards=[card(r, files[r["pair_id"]], show_unsafe, eager=i < EAGER_CARDS) for i, r in enumerate(rows)],
        lookalike_cards=[lookalike_card(r, files[r["lookalike_id"]], eager=len(rows) + i < EAGER_CARDS)
                         for i, r in enumerate(lookalikes)],
    )
    path = root / "gallery" / "index.html"
    path.write_text(page, encoding="utf-8")
    return path
