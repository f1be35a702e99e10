"""Judging images through the memo: a record judge from the rows, a two-step backend from its stored
reading (read once per image, decided per category), any other from the pixels."""

from __future__ import annotations

from typing import Any, Sequence

from sp_assets.backends.base import RecordJudge, TwoStep
from sp_assets.core.policy import Category
from sp_assets.execution.calls import Judged, judge_call, reader_call
from sp_assets.execution.lazy import LazyBackend
from sp_assets.execution.memo import Memo, Outcome
from sp_assets.execution.tasks import decide_task, pixel_task, read_task, record_task


def judged(memo: Memo, lazy: LazyBackend, category: Category, rows: Sequence[dict[str, Any]],
           image_key: str = "image_sha256", path_key: str = "image_path") -> list[tuple[dict[str, Any], Outcome]]:
    """(row, outcome) for every row: the verdict of the backend on the row's image under ``category``.

    The model loads only if some answer is not in the memo yet.
    """

    def task_for(missing: list[dict[str, Any]]):
        backend = lazy.get()
        if isinstance(backend, RecordJudge):
            task = record_task(backend, category)
        elif isinstance(backend, TwoStep):
            unique = list({r[image_key]: r for r in missing}.values())
            readings = {row[image_key]: out.result for row, out in
                        memo.run(reader_call(backend, image_key), read_task(backend, memo.images, path_key), unique)}
            task = decide_task(backend, category, readings, image_key)
        else:
            task = pixel_task(backend, memo.images, category, path_key)
        return lambda batch: [Judged(v, backend.info) for v in task(batch)]

    return memo.run(judge_call(lazy, category, image_key), task_for, list(rows), prepare=True)
