"""The writer role (edit instructions for an unsafe source): its memo key and codec, and its task."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from sp_assets.backends.base import control_edit, policy_part_sha256
from sp_assets.core.policy import Category, Policy
from sp_assets.core.record_types import Instruction
from sp_assets.core.records import stored_verdict
from sp_assets.execution.memo import Call, Encoded
from sp_assets.execution.work import Rows
from sp_assets.storage import ImageStore


@dataclass(frozen=True)
class Written:
    """What the writer gave for one unsafe source: its flip instructions and the control, if any."""

    flips: list[Instruction]
    null: Instruction | None
    model_id: str = ""


def writer_call(config_sha256: str, category: Category, variants: int, seed: int, control_pairs: bool) -> Call:
    """The instructions a writer gives for one unsafe source and the judge's finding."""
    policy = {"category": policy_part_sha256(category), "control_edit": control_edit()}

    def inputs(label: dict[str, Any]) -> dict[str, Any]:
        verdict = {k: label.get(k) for k in ("rating", "judged_category", "score", "rationale", "regions_json",
                                             "raw_output")}
        return {"image": label["image_sha256"], "verdict": verdict, "category": category.slug, "policy": policy,
                "variants": variants, "seed": seed, "control": control_pairs}

    def encode(w: Written) -> Encoded:
        return Encoded(json.dumps({"flips": [asdict(i) for i in w.flips], "null": asdict(w.null) if w.null else None,
                                   "model_id": w.model_id}, sort_keys=True))

    def decode(text: str, _b: bytes | None) -> Written:
        d = json.loads(text)
        return Written([Instruction(**i) for i in d["flips"]], Instruction(**d["null"]) if d["null"] else None,
                       d["model_id"])

    return Call("writer", config_sha256, inputs, encode, decode)


def write_instructions(writer: Any, images: ImageStore, policy: Policy, batch: Rows, category: str, variants: int,
                       seed: int, control_pairs: bool) -> list[Written]:
    """Instructions that remove the violation the judge found (and a control), per unsafe-label row."""

    def one(label: dict[str, Any]) -> Written:
        verdict = stored_verdict(label)
        target = policy.category(category)
        if verdict.category:
            try:
                target = policy.category(verdict.category)
            except KeyError:
                pass  # the judge named a category this policy lacks: write for the partition's category
        image = images.open(label["image_path"])
        flips = writer.write(image, verdict, target, variants, seed)
        null = writer.write_null(image, verdict, target, seed) if flips and control_pairs else None
        return Written(list(flips), null, writer.info.model_id)

    return writer.each(one, batch)  # a writer behind a model server writes a batch's rows concurrently
