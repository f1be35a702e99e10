"""The per-item work of the heavy stages, as batch tasks for the worker pool.

Each ``*_task`` function returns a task: a function of one batch of items (table rows) that loads the
images it needs from the image store, calls the backend once for the batch, and returns one result
per item. Tasks hold no database connection; the stage commits what they return.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from sp_assets.backends.base import (
    Editor,
    EditResult,
    Embedder,
    Guard,
    Instruction,
    InstructionWriter,
    Judge,
    RecordJudge,
    Verdict,
)
from sp_assets.core.policy import Category, Policy
from sp_assets.core.records import stored_verdict
from sp_assets.core.verification import measure_preservation
from sp_assets.storage import ImageStore

Rows = Sequence[dict[str, Any]]


def judge_task(judge: Judge, images: ImageStore, category: Category) -> Callable[[Rows], list[Verdict]]:
    """Source rows -> the judge's verdict on each (a record judge reads the rows, a pixel judge the images)."""

    def run(batch: Rows) -> list[Verdict]:
        if isinstance(judge, RecordJudge):
            return judge.judge_records(list(batch), category)
        return judge.judge([images.open(r["image_path"]) for r in batch], category)

    return run


@dataclass(frozen=True)
class Written:
    """What the writer gave for one unsafe source: its flip instructions and the control, if any."""

    flips: list[Instruction]
    null: Instruction | None


def write_task(writer: InstructionWriter, images: ImageStore, policy: Policy, category: Category,
               variants: int, seed: int, control_pairs: bool) -> Callable[[Rows], list[Written]]:
    """Unsafe-label rows -> instructions that remove the violation the judge found (and a control)."""

    def one(label: dict[str, Any]) -> Written:
        verdict = stored_verdict(label)
        target = category
        if verdict.category:
            try:
                target = policy.category(verdict.category)
            except KeyError:
                pass  # the judge named a category this policy lacks: write for the partition's category
        image = images.open(label["image_path"])
        flips = writer.write(image, verdict, target, variants, seed)
        null = writer.write_null(image, verdict, target, seed) if flips and control_pairs else None
        return Written(list(flips), null)

    return lambda batch: [one(label) for label in batch]


@dataclass(frozen=True)
class Edited:
    """One edit attempt: the stored edit, or the error that stopped it."""

    result: EditResult | None
    error: str
    seconds: float
    edited_sha256: str | None = None
    edited_path: str | None = None


def edit_task(editor: Editor, images: ImageStore) -> Callable[[Rows], list[Edited]]:
    """Edit jobs (instruction rows with a seed) -> edits stored in the image store.

    If the batch call fails, each job is retried alone, so one bad item fails alone and the others go on.
    """

    def instruction(job: dict[str, Any]) -> Instruction:
        return Instruction(text=job["instruction"], target=json.loads(job["target_json"]), keep=job["keep"] or "",
                           variant=job["variant"])

    def store(result: EditResult | None, error: str, seconds: float) -> Edited:
        if result is None:
            return Edited(None, error, seconds)
        sha, rel = images.put_image(result.image)
        return Edited(result, "", seconds, sha, rel)

    def run(batch: Rows) -> list[Edited]:
        sources = [images.open(j["image_path"]) for j in batch]
        t0 = time.perf_counter()
        try:
            results = editor.edit(sources, [instruction(j) for j in batch], [j["seed"] for j in batch])
        except Exception:  # noqa: BLE001 - retried one by one below, where each failure is recorded
            if len(batch) == 1:
                raise
        else:
            per = (time.perf_counter() - t0) / max(1, len(batch))
            return [store(r, "", per) for r in results]
        return [_edit_alone(editor, src, instruction(j), j["seed"], store) for src, j in zip(sources, batch)]

    return run


def _edit_alone(editor: Editor, source: Any, ins: Instruction, seed: int, store: Callable[..., Edited]) -> Edited:
    t0 = time.perf_counter()
    try:
        result = editor.edit([source], [ins], [seed])[0]
    except Exception as exc:  # noqa: BLE001 - a failed edit is recorded with its error, the batch goes on
        return store(None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)
    return store(result, "", time.perf_counter() - t0)


@dataclass(frozen=True)
class Verified:
    """The verifier's verdict on one edit and the preservation measurements of the pair."""

    verdict: Verdict
    measures: dict[str, Any]


def verify_task(verifier: Judge, embedder: Embedder, images: ImageStore, category: Category,
                lpips: Callable[[Any, Any], float] | None) -> Callable[[Rows], list[Verified | None]]:
    """Candidate rows -> verdict and measurements for each successful edit (None for a failed edit)."""

    def run(batch: Rows) -> list[Verified | None]:
        good = [c for c in batch if c["status"] == "ok"]
        if not good:
            return [None] * len(batch)
        sources = [images.open(c["source_path"]) for c in good]
        edits = [images.open(c["edited_path"]) for c in good]
        verdicts = verifier.judge(edits, category)
        vectors = embedder.embed(sources + edits)
        cosines = np.sum(vectors[: len(good)] * vectors[len(good):], axis=1)
        measured = {
            c["candidate_id"]: Verified(v, measure_preservation(s, e, c["region_json"], cos, lpips))
            for c, s, e, v, cos in zip(good, sources, edits, verdicts, cosines, strict=True)}
        return [measured.get(c["candidate_id"]) if c["status"] == "ok" else None for c in batch]

    return run


def guard_task(guard: Judge | Guard, images: ImageStore, category: Category) -> Callable[[Rows], list[Verdict]]:
    """Items with an ``image_path`` -> the guard's verdict on each image."""

    def run(batch: Rows) -> list[Verdict]:
        pictures = [images.open(r["image_path"]) for r in batch]
        if isinstance(guard, Judge):
            return guard.judge(pictures, category)
        return guard.predict(pictures, category)

    return run


def embed_task(embedder: Embedder, images: ImageStore) -> Callable[[Sequence[str]], list[np.ndarray]]:
    """Stored image paths -> one embedding vector each."""
    return lambda paths: list(embedder.embed([images.open(p) for p in paths]))
