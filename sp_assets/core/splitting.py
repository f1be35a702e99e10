"""Train / validation / test splits, grouped by source image and exact per category.

Sources are ordered by a seeded hash and cut with exact proportions (largest remainder), so each
category is stratified, no source is in two splits, and the same sources and seed give the same split.
"""

from __future__ import annotations

import hashlib
import math

from sp_assets.core.hashing import sha256_json

SPLITS = ("train", "validation", "test")


def split_counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Exact counts per split for n items (largest remainder; ties go to train, then validation)."""
    total = sum(fractions.values())
    if total <= 0:
        raise ValueError(f"split fractions must sum to more than 0, got {fractions}")
    raw = {k: n * v / total for k, v in fractions.items()}
    counts = {k: math.floor(v) for k, v in raw.items()}
    left = n - sum(counts.values())
    for k in sorted(raw, key=lambda k: (-(raw[k] - counts[k]), SPLITS.index(k)))[:left]:
        counts[k] += 1
    return counts


def assign_splits(sources: list[str], seed: int, fractions: dict[str, float]) -> dict[str, str]:
    """source hash -> split name."""
    order = sorted(sources, key=lambda s: hashlib.sha256(f"{seed}:{s}".encode()).hexdigest())
    counts = split_counts(len(order), fractions)
    out: dict[str, str] = {}
    i = 0
    for name in SPLITS:
        for sha in order[i:i + counts[name]]:
            out[sha] = name
        i += counts[name]
    return out


def sources_in_two_splits(rows: list[dict]) -> list[str]:
    """Source hashes that appear in more than one split (must be none)."""
    seen: dict[str, str] = {}
    return [r["image_sha256"] for r in rows if seen.setdefault(r["image_sha256"], r["split"]) != r["split"]]


def best_per_source(candidates: list[dict]) -> tuple[dict[str, dict], dict[str, int]]:
    """The first candidate of each source (rows come best first) and how many each source had."""
    best: dict[str, dict] = {}
    counts: dict[str, int] = {}
    for row in candidates:
        counts[row["image_sha256"]] = counts.get(row["image_sha256"], 0) + 1
        best.setdefault(row["image_sha256"], row)
    return best, counts


def benchmark_rows(base: dict, flips: list[dict], controls: list[dict], seed: int, fractions: dict[str, float],
                   split_sha256: str) -> list[dict]:
    """One benchmark pair per source: its best accepted flip over all profiles, the best accepted control
    of the same source and editor, and the source's split. ``flips`` and ``controls`` come best first."""
    best, n_candidates = best_per_source(flips)
    control_of: dict[tuple[str, str], dict] = {}
    for row in controls:
        control_of.setdefault((row["image_sha256"], row["editor_profile"]), row)
    splits = assign_splits(list(best), seed, fractions)
    rows = []
    for sha, row in sorted(best.items()):
        control = control_of.get((sha, row["editor_profile"])) or {}
        rows.append({
            **base, "pair_id": sha256_json([sha, row["edited_sha256"]]), "split": splits[sha], "image_sha256": sha,
            "unsafe_path": row["unsafe_path"], "candidate_id": row["candidate_id"], "safe_sha256": row["edited_sha256"],
            "safe_path": row["edited_path"], "instruction": row["instruction"], "judge_profile": row["judge_profile"],
            "writer_profile": row["writer_profile"], "editor_profile": row["editor_profile"],
            "quality_score": row["quality_score"], "n_accepted_candidates": n_candidates[sha],
            "split_config_sha256": split_sha256, "control_candidate_id": control.get("candidate_id"),
            "control_sha256": control.get("edited_sha256"), "control_path": control.get("edited_path"),
        })
    return rows


def split_counts_of(rows: list[dict]) -> dict[str, int]:
    """Pairs per split, and how many carry a control."""
    out = {name: sum(1 for r in rows if r["split"] == name) for name in SPLITS}
    out["controlled"] = sum(1 for r in rows if r["control_sha256"])
    return out
