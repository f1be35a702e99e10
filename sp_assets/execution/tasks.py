"""The per-item work of the heavy stages: named batch tasks, described by a picklable ``Work``.

A stage hands the worker pool a ``Work`` (which task, which backend profile, the policy, plain
arguments) and batches of rows. A worker runs ``run_work``: it builds the backend once for its life
(the process's backend cache), opens the images it needs from the image store, calls the backend once
for the batch and returns one result per row. Nothing here holds a database connection, and nothing
refers to objects of the process that made the ``Work``, so a worker may live in another process or
on another machine.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Callable, Sequence

from sp_assets.backends import registry
from sp_assets.backends.base import EditResult, Instruction, Judge, ModelInfo, SourceOptions, Verdict
from sp_assets.backends.profiles import Profile
from sp_assets.core.policy import Policy
from sp_assets.core.records import stored_verdict
from sp_assets.core.verification import measure_preservation
from sp_assets.storage import ImageStore

Rows = Sequence[dict[str, Any]]


@dataclass(frozen=True)
class Work:
    """One kind of batch work: the task's name, the image store, the backend profile (built in the
    worker) and the policy it is built with, and the task's plain arguments."""

    task: str
    images: str  # the image store's root (a folder or a URL)
    policy: Policy
    profile: Profile | None = None
    args: dict[str, Any] = field(default_factory=dict)

    @property
    def resources(self) -> dict[str, float]:
        """CPUs and GPUs a worker needs for this work, from the profile (``num_cpus``, ``num_gpus``)."""
        needs = self.profile.resources if self.profile else {}
        return {"num_cpus": float(needs.get("num_cpus", 1)), "num_gpus": float(needs.get("num_gpus", 0))}


@dataclass(frozen=True)
class Judged:
    """A verdict and the model that gave it (recorded in the stage rows, also when reused)."""

    verdict: Verdict
    info: ModelInfo


@dataclass(frozen=True)
class Written:
    """What the writer gave for one unsafe source: its flip instructions and the control, if any."""

    flips: list[Instruction]
    null: Instruction | None
    model_id: str = ""


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


@lru_cache(maxsize=8)
def image_store(root: str) -> ImageStore:
    return ImageStore(root)


def run_work(work: Work, batch: Rows) -> list[Any]:
    """Run one batch of ``work`` in this process (its backend is loaded here once, then reused)."""
    if work.profile is None:
        backend = None
    elif work.task == "read":  # a two-step backend's reading half is all this batch needs
        backend = registry.build_reader(work.profile, work.policy)
    else:
        backend = registry.build(work.profile, work.policy)
    return TASKS[work.task](backend, image_store(work.images), work.policy, list(batch), **work.args)


# -- the tasks: (backend, images, policy, batch, **args) -> one result per row ----------------------


def _record(judge: Any, images: ImageStore, policy: Policy, batch: Rows, category: str) -> list[Judged]:
    """A record judge's verdict from the rows (manifest labels), not the pixels."""
    return [Judged(v, judge.info) for v in judge.judge_records(batch, policy.category(category))]


def _read(backend: Any, images: ImageStore, policy: Policy, batch: Rows, path_key: str) -> list[Any]:
    """A two-step backend's category-independent reading of each row's image."""
    return backend.read([images.open(r[path_key]) for r in batch])


def _decide(backend: Any, images: ImageStore, policy: Policy, batch: Rows, category: str) -> list[Judged]:
    """The verdict under ``category`` from each row's stored ``reading`` (no image is opened)."""
    return [Judged(v, backend.info) for v in backend.decide([r["reading"] for r in batch], policy.category(category))]


def _pixels(backend: Any, images: ImageStore, policy: Policy, batch: Rows, category: str,
            path_key: str) -> list[Judged]:
    """A judge's or a guard's verdict on each row's image under ``category``."""
    pictures = [images.open(r[path_key]) for r in batch]
    rate = backend.judge if isinstance(backend, Judge) else backend.predict
    return [Judged(v, backend.info) for v in rate(pictures, policy.category(category))]


def _write(writer: Any, images: ImageStore, policy: Policy, batch: Rows, category: str, variants: int, seed: int,
           control_pairs: bool) -> list[Written]:
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

    return [one(label) for label in batch]


def _edit(editor: Any, images: ImageStore, policy: Policy, batch: Rows) -> list[EditOutput]:
    """Edit jobs (instruction rows with a seed) -> edits stored in the image store.

    If the batch call fails, each job is retried alone, so one bad item fails alone and the others go on.
    """
    info = {"model_id": editor.info.model_id, "model_revision": editor.info.revision,
            "model_device": editor.info.device}

    def store(result: EditResult | None, error: str, seconds: float) -> EditOutput:
        if result is None:
            return EditOutput(error, seconds, **info)
        sha, rel = images.put_image(result.image)  # the file exists before any row points at it
        return EditOutput("", seconds, **info, edited_sha256=sha, edited_path=rel, raw_size=tuple(result.raw_size),
                          size=result.image.size,
                          region_json=json.dumps(result.region) if result.region is not None else None,
                          detail_json=json.dumps(result.detail, sort_keys=True, default=str))

    sources = [images.open(j["image_path"]) for j in batch]
    t0 = time.perf_counter()
    try:
        results = editor.edit(sources, [_instruction(j) for j in batch], [j["seed"] for j in batch])
    except Exception:  # noqa: BLE001 - retried one by one below, where each failure is recorded
        if len(batch) == 1:
            raise
    else:
        per = (time.perf_counter() - t0) / max(1, len(batch))
        return [store(r, "", per) for r in results]
    return [_edit_alone(editor, src, _instruction(j), j["seed"], store) for src, j in zip(sources, batch)]


def _instruction(job: dict[str, Any]) -> Instruction:
    return Instruction(text=job["instruction"], target=json.loads(job["target_json"]), keep=job["keep"] or "",
                       variant=job["variant"])


def _edit_alone(editor: Any, source: Any, ins: Instruction, seed: int, store: Callable[..., EditOutput]
                ) -> EditOutput:
    t0 = time.perf_counter()
    try:
        result = editor.edit([source], [ins], [seed])[0]
    except Exception as exc:  # noqa: BLE001 - a failed edit is recorded with its error, the batch goes on
        return store(None, f"{type(exc).__name__}: {exc}", time.perf_counter() - t0)
    return store(result, "", time.perf_counter() - t0)


def _embed(embedder: Any, images: ImageStore, policy: Policy, batch: Rows) -> list[Any]:
    """One embedding vector per row's ``image_path``."""
    return list(embedder.embed([images.open(r["image_path"]) for r in batch]))


@lru_cache(maxsize=1)
def _lpips() -> Any:
    from sp_assets.core.image_metrics import lpips_scorer

    return lpips_scorer()[0]


def _preserve(_: Any, images: ImageStore, policy: Policy, batch: Rows, lpips: bool) -> list[dict[str, Any]]:
    """Sizes, changed region, SSIM / PSNR outside it (and LPIPS) of each candidate's source and edit."""
    scorer = _lpips() if lpips else None

    def one(c: dict[str, Any]) -> dict[str, Any]:
        measures = measure_preservation(images.open(c["source_path"]), images.open(c["edited_path"]),
                                        c["region_json"], 0.0, scorer)
        measures.pop("embedding_cosine")  # from the embeddings, not the pixels
        return measures

    return [one(c) for c in batch]


def _text_embed(_: Any, images: ImageStore, policy: Policy, batch: Rows) -> list[Any]:
    from sp_assets.core.probe import text_embedding_features

    return list(text_embedding_features([r["text"] for r in batch]))


def _intake(source: Any, images: ImageStore, policy: Policy, batch: Rows, category: str, options: SourceOptions,
            base: dict[str, Any]) -> list[Any]:
    """A source's items for one category taken into the image store (or quarantined)."""
    from sp_assets.execution.intake import take_in

    return [take_in(source.scan(policy.category(category), options), images, base, source.origin) for _ in batch]


TASKS: dict[str, Callable[..., list[Any]]] = {
    "record": _record, "read": _read, "decide": _decide, "pixels": _pixels, "write": _write, "edit": _edit,
    "embed": _embed, "preserve": _preserve, "text_embed": _text_embed, "intake": _intake,
}
