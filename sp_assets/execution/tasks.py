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
    TwoStep,
    Verdict,
)
from sp_assets.core.policy import Category, Policy
from sp_assets.core.records import stored_verdict
from sp_assets.core.verification import measure_preservation
from sp_assets.storage import ImageStore

Rows = Sequence[dict[str, Any]]


def record_task(judge: RecordJudge, category: Category) -> Callable[[Rows], list[Verdict]]:
    """Source rows -> a record judge's verdict, from the rows (manifest labels), not the pixels."""
    return lambda batch: judge.judge_records(list(batch), category)


@dataclass(frozen=True)
class Written:
    """What the writer gave for one unsafe source: its flip instructions and the control, if any."""

    flips: list[Instruction]
    null: Instruction | None
    model_id: str = ""


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
        return Written(list(flips), null, writer.info.model_id)

    return lambda batch: [one(label) for label in batch]


@dataclass(frozen=True)
class EditOutput:
    """One edit attempt: the stored edit and what made it, or the error that stopped it."""

    error: str
    seconds: float
    model_id: str
    model_revision: str
    model_device: str
    edited_sha256: str | None = None
    edited_path: str | None = None
    raw_size: tuple[int, int] = (0, 0)
    size: tuple[int, int] = (0, 0)
    region_json: str | None = None
    detail_json: str | None = None


def edit_task(editor: Editor, images: ImageStore) -> Callable[[Rows], list[EditOutput]]:
    """Edit jobs (instruction rows with a seed) -> edits stored in the image store.

    If the batch call fails, each job is retried alone, so one bad item fails alone and the others go on.
    """
    info = {"model_id": editor.info.model_id, "model_revision": editor.info.revision,
            "model_device": editor.info.device}

    def instruction(job: dict[str, Any]) -> Instruction:
        return Instruction(text=job["instruction"], target=json.loads(job["target_json"]), keep=job["keep"] or "",
                           variant=job["variant"])

    def store(result: EditResult | None, error: str, seconds: float) -> EditOutput:
        if result is None:
            return EditOutput(error, seconds, **info)
        sha, rel = images.put_image(result.image)  # the file exists before any row points at it
        return EditOutput("", seconds, **info, edited_sha256=sha, edited_path=rel, raw_size=tuple(result.raw_size),
                          size=result.image.size,
                          region_json=json.dumps(result.region) if result.region is not None else None,
                          detail_json=json.dumps(result.detail, sort_keys=True, default=str))

    def run(batch: Rows) -> list[EditOutput]:
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


def _edit_alone(editor: Editor, source: Any, ins: Instruction, seed: int, store: Callable[..., EditOutput]
                ) -> EditOutput:
    t0 = time.perf_counter()
    try:
        result = editor.edit([source], [ins], [seed])[0]
    except Exception as exc:  # noqa: BLE001 - a failed edit is recorded with its error, the batch goes on
        return store(None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)
    return store(result, "", time.perf_counter() - t0)


def read_task(backend: TwoStep, images: ImageStore, path_key: str) -> Callable[[Rows], list[Any]]:
    """Rows -> a two-step backend's category-independent reading of each row's image."""
    return lambda batch: backend.read([images.open(r[path_key]) for r in batch])


def decide_task(backend: TwoStep, category: Category, readings: dict[str, Any], image_key: str
                ) -> Callable[[Rows], list[Verdict]]:
    """Rows -> the verdict under ``category`` from each image's stored reading (no image is opened)."""
    return lambda batch: backend.decide([readings[r[image_key]] for r in batch], category)


def pixel_task(backend: Judge | Guard, images: ImageStore, category: Category, path_key: str
               ) -> Callable[[Rows], list[Verdict]]:
    """Rows -> a judge's or a guard's verdict on each row's image under ``category``."""

    def run(batch: Rows) -> list[Verdict]:
        pictures = [images.open(r[path_key]) for r in batch]
        if isinstance(backend, Judge):
            return backend.judge(pictures, category)
        return backend.predict(pictures, category)

    return run


def embed_task(embedder: Embedder, images: ImageStore) -> Callable[[Rows], list[np.ndarray]]:
    """Rows with an ``image_path`` -> one embedding vector each."""
    return lambda batch: list(embedder.embed([images.open(r["image_path"]) for r in batch]))


def preservation_task(images: ImageStore, lpips: Callable[[Any, Any], float] | None
                      ) -> Callable[[Rows], list[dict[str, Any]]]:
    """Candidate rows (successful edits) -> sizes, changed region, SSIM / PSNR outside it, LPIPS."""

    def one(c: dict[str, Any]) -> dict[str, Any]:
        measures = measure_preservation(images.open(c["source_path"]), images.open(c["edited_path"]),
                                        c["region_json"], 0.0, lpips)
        measures.pop("embedding_cosine")  # from the embeddings, not the pixels
        return measures

    return lambda batch: [one(c) for c in batch]
