"""Train / validation / test splits, grouped by source image and exact per category.

Sources are ordered by a seeded hash and cut with exact proportions (largest remainder), so each
category is stratified, no source is in two splits, and the same sources and seed give the same split.
"""

from __future__ import annotations

import hashlib
import math

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
