"""The editor role (an edited copy of a source, per instruction and seed): its memo key and codec, and
its task."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable

from sp_assets.core.policy import Policy
from sp_assets.core.record_types import EditResult, Instruction
from sp_assets.execution.memo import Call, Encoded
from sp_assets.execution.work import Rows
from sp_assets.storage import ImageStore


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


def edit_images(editor: Any, images: ImageStore, policy: Policy, batch: Rows) -> list[EditOutput]:
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
