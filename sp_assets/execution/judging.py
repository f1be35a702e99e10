"""Judging images through the memo: a record judge from the rows, a two-step backend from its stored
reading (read once per image, decided per category), any other from the pixels."""

from __future__ import annotations

from typing import Any, Sequence

from sp_assets.backends.base import RecordJudge, TwoStep
from sp_assets.core.policy import Category
from sp_assets.execution.calls import judge_call, reader_call
from sp_assets.execution.lazy import LazyBackend
from sp_assets.execution.memo import Memo, Outcome


def judged(memo: Memo, lazy: LazyBackend, category: Category, rows: Sequence[dict[str, Any]],
           image_key: str = "image_sha256", path_key: str = "image_path") -> list[tuple[dict[str, Any], Outcome]]:
    """(row, outcome) for every row: the verdict of the backend on the row's image under ``category``.

    Nothing loads unless some answer is not in the memo yet; a two-step backend reads (once per
    image, for every category) only the images whose verdicts are missing.
    """
    call = judge_call(lazy, category, image_key)
    images = str(memo.images.root)
    if issubclass(lazy.cls, RecordJudge):
        return memo.run(call, lazy.work("record", images, category=category.slug), list(rows))
    if not issubclass(lazy.cls, TwoStep):
        return memo.run(call, lazy.work("pixels", images, category=category.slug, path_key=path_key), list(rows))
    missing = list({r[image_key]: r for r in memo.missing(call, rows)}.values())
    readings = {row[image_key]: out.result for row, out in
                memo.run(reader_call(lazy, image_key), lazy.work("read", images, path_key=path_key), missing)}
    with_readings = [{**r, "reading": readings.get(r[image_key])} for r in rows]
    return memo.run(call, lazy.work("decide", images, category=category.slug), with_readings)


def prefetch_readings(memo: Memo, lazy: LazyBackend, rows: Sequence[dict[str, Any]],
                      image_key: str = "image_sha256", path_key: str = "image_path") -> None:
    """Read every image a two-step backend will judge, all categories at once, before judging them.

    A reading does not depend on the category, so one pass over the images of every category keeps all
    the workers busy, where category by category the last batch of each would leave some idle.
    """
    if issubclass(lazy.cls, TwoStep) and rows:
        unique = list({r[image_key]: r for r in rows}.values())
        memo.run(reader_call(lazy, image_key), lazy.work("read", str(memo.images.root), path_key=path_key), unique)
