"""The judge role (a judge, or a guard, rating images under a category): its memo keys and codec, its
task functions, and judging rows through the memo.

A record judge decides from the source's manifest record; a two-step backend reads each image once
(``reader_call``, the same for every category) and decides per category from the stored reading;
any other judge or guard rates the pixels.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Sequence

from sp_assets.backends.base import Judge, RecordJudge, TwoStep, policy_key
from sp_assets.core.hashing import sha256_json
from sp_assets.core.policy import Category, Policy
from sp_assets.core.record_types import ModelInfo, Verdict
from sp_assets.execution.lazy import LazyBackend
from sp_assets.execution.memo import Call, Encoded, Memo, Outcome
from sp_assets.execution.work import Rows
from sp_assets.storage import ImageStore


@dataclass(frozen=True)
class Judged:
    """A verdict and the model that gave it (recorded in the stage rows, also when reused)."""

    verdict: Verdict
    info: ModelInfo


# -- memo keys and codec -----------------------------------------------------------------------------


def _encode_judged(j: Judged) -> Encoded:
    return Encoded(json.dumps({"verdict": j.verdict.as_dict(), "info": j.info.as_dict()}, sort_keys=True))


def _decode_judged(text: str, _blob: bytes | None) -> Judged:
    d = json.loads(text)
    return Judged(Verdict.from_dict(d["verdict"]), ModelInfo(**d["info"]))


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


# -- tasks: (backend, images, policy, batch, **args) -> one result per row ------------------------------


def judge_records(judge: Any, images: ImageStore, policy: Policy, batch: Rows, category: str) -> list[Judged]:
    """A record judge's verdict from the rows (manifest labels), not the pixels."""
    return [Judged(v, judge.info) for v in judge.judge_records(batch, policy.category(category))]


def read_images(backend: Any, images: ImageStore, policy: Policy, batch: Rows, path_key: str) -> list[Any]:
    """A two-step backend's category-independent reading of each row's image."""
    return backend.read([images.open(r[path_key]) for r in batch])


def decide_readings(backend: Any, images: ImageStore, policy: Policy, batch: Rows, category: str) -> list[Judged]:
    """The verdict under ``category`` from each row's stored ``reading`` (no image is opened)."""
    return [Judged(v, backend.info) for v in backend.decide([r["reading"] for r in batch], policy.category(category))]


def rate_pixels(backend: Any, images: ImageStore, policy: Policy, batch: Rows, category: str,
                path_key: str) -> list[Judged]:
    """A judge's or a guard's verdict on each row's image under ``category``."""
    pictures = [images.open(r[path_key]) for r in batch]
    rate = backend.judge if isinstance(backend, Judge) else backend.predict
    return [Judged(v, backend.info) for v in rate(pictures, policy.category(category))]


# -- judging rows through the memo -----------------------------------------------------------------------


def judged(memo: Memo, lazy: LazyBackend, category: Category, rows: Sequence[dict[str, Any]],
           image_key: str = "image_sha256", path_key: str = "image_path") -> list[tuple[dict[str, Any], Outcome]]:
    """(row, outcome) for every row: the verdict of the backend on the row's image under ``category``.

    Nothing loads unless some answer is not in the memo yet; a two-step backend reads (once per
    image, for every category) only the images whose verdicts are missing.
    """
    call = judge_call(lazy, category, image_key)
    images = str(memo.images.root)
    if issubclass(lazy.cls, RecordJudge):
        return memo.run(call, lazy.work(judge_records, images, category=category.slug), list(rows))
    if not issubclass(lazy.cls, TwoStep):
        return memo.run(call, lazy.work(rate_pixels, images, category=category.slug, path_key=path_key), list(rows))
    missing = list({r[image_key]: r for r in memo.missing(call, rows)}.values())
    readings = {row[image_key]: out.result for row, out in
                memo.run(reader_call(lazy, image_key), _reading(lazy, images, path_key), missing)}
    with_readings = [{**r, "reading": readings.get(r[image_key])} for r in rows]
    return memo.run(call, lazy.work(decide_readings, images, category=category.slug), with_readings)


def prefetch_readings(memo: Memo, lazy: LazyBackend, rows: Sequence[dict[str, Any]],
                      image_key: str = "image_sha256", path_key: str = "image_path") -> None:
    """Read every image a two-step backend will judge, all categories at once, before judging them.

    A reading does not depend on the category, so one pass over the images of every category keeps all
    the workers busy, where category by category the last batch of each would leave some idle.
    """
    if issubclass(lazy.cls, TwoStep) and rows:
        unique = list({r[image_key]: r for r in rows}.values())
        memo.run(reader_call(lazy, image_key), _reading(lazy, str(memo.images.root), path_key), unique)


def _reading(lazy: LazyBackend, images: str, path_key: str):
    return lazy.work(read_images, images, reader_only=True, path_key=path_key)
