"""The metrics role (how well an edit preserves its source outside the edited region): memo key and task."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

from sp_assets.core.hashing import sha256_json
from sp_assets.core.policy import Policy
from sp_assets.core.verification import measure_preservation
from sp_assets.execution.memo import Call, Encoded
from sp_assets.execution.work import Rows
from sp_assets.storage import ImageStore

PRESERVATION_VERSION = "preservation-v2"  # bump when core.verification.measure_preservation changes


def preservation_call(lpips_note: str | None) -> Call:
    """The preservation measurements of a (source, edit) pair outside the edited region; ``lpips_note``
    names the LPIPS that runs, None when none does (why it is skipped, which names an exception type or
    a path, would change the key between processes and machines for the same measurements)."""
    config = sha256_json({"version": PRESERVATION_VERSION, "lpips": lpips_note or "none"})
    return Call("metrics", config,
                lambda c: {"source": c["image_sha256"], "edit": c["edited_sha256"], "region": c["region_json"]},
                lambda m: Encoded(json.dumps(m, sort_keys=True)), lambda text, _b: json.loads(text))


@lru_cache(maxsize=1)
def _lpips() -> Any:
    from sp_assets.core.image_metrics import lpips_scorer

    return lpips_scorer()[0]


def measure_pairs(_: Any, images: ImageStore, policy: Policy, batch: Rows, lpips: bool) -> list[dict[str, Any]]:
    """Sizes, changed region, SSIM / PSNR outside it (and LPIPS) of each candidate's source and edit."""
    scorer = _lpips() if lpips else None

    def one(c: dict[str, Any]) -> dict[str, Any]:
        measures = measure_preservation(images.open(c["source_path"]), images.open(c["edited_path"]),
                                        c["region_json"], 0.0, scorer)
        measures.pop("embedding_cosine")  # from the embeddings, not the pixels
        return measures

    return [one(c) for c in batch]
