"""Human labels from a source manifest, recorded as a judge so provenance says who decided."""

from __future__ import annotations

import json
from typing import Any, Sequence

from PIL import Image

from sp_assets.backends.base import RecordJudge

from sp_assets.core.record_types import ModelInfo, Verdict
from sp_assets.core.human_labels import human_rating, normalised
from sp_assets.core.policy import Category, Policy
from sp_assets.backends.profiles import ProfileParams


class ManifestJudge(RecordJudge):
    Params = ProfileParams  # none: the labels are the manifest's
    def __init__(self, policy: Policy):
        self.policy = policy
        self.info = ModelInfo(model_id="manifest", revision="human-labels", device="none")

    def judge(self, images: Sequence[Image.Image], category: Category) -> list[Verdict]:
        raise TypeError(
            "the 'manifest' judge only labels source images from their manifest rows; it cannot "
            "judge new edits. Set a pixel judge as the verifier (SP_VERIFY_JUDGE=scene_text)."
        )

    def judge_records(self, records: Sequence[dict[str, Any]], category: Category) -> list[Verdict]:
        return [self._one(r, category) for r in records]

    def _one(self, record: dict[str, Any], category: Category) -> Verdict:
        raw = {k: record.get(k) for k in ("manifest_rating", "manifest_category", "manifest_rationale")}
        raw_output = json.dumps(raw, sort_keys=True)
        # Words outside the rating vocabulary are refused as 'invalid' (fail closed).
        rating = normalised(record.get("manifest_rating"))
        human = human_rating(rating)
        if human == "unsafe":
            labelled = str(record.get("manifest_category") or "").strip()
            try:
                judged = self.policy.category(labelled).slug if labelled else category.slug
            except KeyError:
                judged = category.slug
            return Verdict("unsafe", judged, 1.0, str(record.get("manifest_rationale") or "labelled unsafe"), raw_output)
        if human == "safe":
            return Verdict("safe", "", 0.0, str(record.get("manifest_rationale") or "labelled safe"), raw_output)
        why = "no manifest label" if not rating else f"unrecognised manifest rating {rating!r}"
        return Verdict("invalid", "", None, why, raw_output)
