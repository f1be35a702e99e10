"""Shared test helpers: run (part of) the graph in a temporary data folder on a small demo pool."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pytest
from dagster import DagsterInstance, materialize
from dagster_duckdb import DuckDBResource

from sp_assets.defs import STAGES
from sp_assets.defs.resources import (
    EditorResource, EmbedderResource, GuardResource, JudgeResource, PipelineSettings, SourceResource, WriterResource,
)
from sp_assets.storage import Store

RANGE_START = "dagster/asset_partition_range_start"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "full: starts real processes or takes minutes; only in `make test-all`")

RANGE_END = "dagster/asset_partition_range_end"


def graph_resources(data_root: Path, **settings: Any) -> dict[str, Any]:
    values: dict[str, Any] = {"data_root": str(data_root), "demo_unsafe_per_category": 3, "demo_safe_per_category": 1}
    values.update(settings)
    editor = values.pop("editor_profile", "text_region")
    also = values.pop("editor_also", [])
    source = values.pop("source", "demo")
    guards = values.pop("guards", None)
    return {
        "settings": PipelineSettings(**values),
        "source": SourceResource(profile=source),
        "guards": GuardResource(**({"profiles": guards} if guards is not None else {})),
        "duckdb": DuckDBResource(database=str(data_root / "safetypairs.duckdb")),
        "judge": JudgeResource(profile="scene_text"),
        "writer": WriterResource(profile="template"),
        "editor": EditorResource(profile=editor, also=also),
        "embedder": EmbedderResource(profile="efficientnet_lite0"),
    }


def run_graph(data_root: Path, first: str, last: str, selection: Sequence[str] | None = None,
              instance: DagsterInstance | None = None, **settings: Any):
    result = materialize(
        STAGES,
        selection=list(selection) if selection else None,
        resources=graph_resources(data_root, **settings),
        instance=instance or DagsterInstance.ephemeral(),
        tags={RANGE_START: first, RANGE_END: last},
        raise_on_error=True,
    )
    assert result.success
    return result


@dataclass(frozen=True)
class SharedGraph:
    """The whole graph materialized once for the session on ``SHARED_RANGE`` of the small demo pool."""

    data: Path  # read it; to change anything, ``copy_to`` a folder of your own first
    result: Any  # the run's ExecuteInProcessResult
    cold_calls: dict[str, dict[str, int]]  # asset -> role -> model calls made (``model_calls_made``)

    def copy_to(self, folder: Path) -> Path:
        """A copy of the data root (DuckDB file, images) that a test may change; returns its data folder."""
        folder.mkdir(parents=True, exist_ok=True)
        return Path(shutil.copytree(self.data, folder / "data"))


SHARED_RANGE = ("o1_hate", "o2_violence")


@pytest.fixture(scope="session")
def shared_graph(tmp_path_factory: pytest.TempPathFactory) -> SharedGraph:
    """All seven stages on two categories, run once per session: the graph, memo, export and review tests
    read it (or a copy) instead of each materializing the same two categories."""
    from sp_assets.backends import registry

    data = tmp_path_factory.mktemp("shared-graph") / "data"
    registry.clear_cache()
    registry.LOAD_COUNTS.clear()
    result = run_graph(data, *SHARED_RANGE, instance=DagsterInstance.ephemeral())
    return SharedGraph(data=data, result=result, cold_calls=model_calls_made(result))


def model_calls_made(result: Any) -> dict[str, dict[str, int]]:
    """asset -> role -> model calls its step made, from the ``model_calls`` metadata of each materialization
    (a partition-range run records the step's counts once per partition: read one)."""
    made: dict[str, dict[str, int]] = {}
    for event in result.get_asset_materialization_events():
        mat = event.event_specific_data.materialization
        calls = mat.metadata.get("model_calls")
        if calls is not None:
            made.setdefault(mat.asset_key.to_user_string(), {
                role: counts["computed"] for role, counts in calls.value.items()})
    return made


def total_calls(made: dict[str, dict[str, int]]) -> int:
    return sum(n for roles in made.values() for n in roles.values())


def store_at(data_root: Path) -> Store:
    return Store.at(data_root / "safetypairs.duckdb", read_only=True)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads, and on a busy 2-core machine the thread barriers make them
    5-10x slower (a 50 ms edit can stall for seconds). Modules opt in with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def resamples(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Every PIL resize that changes a size during the test, as (from, to): the editor's and a pipeline's alike."""
    from PIL import Image

    seen: list[tuple[tuple[int, int], tuple[int, int]]] = []
    real = Image.Image.resize

    def resize(self, size, *args, **kwargs):
        if tuple(size) != self.size:
            seen.append((self.size, tuple(size)))
        return real(self, size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", resize)
    return seen


def assert_same_rows(before: dict[str, list], after: dict[str, list]) -> None:
    """Two snapshots ({table: rows}) hold the same rows; else fail naming each table and a few rows that
    only one side has (a bare ``==`` on whole tables prints nothing a reader can act on)."""
    problems = []
    for table in sorted(set(before) | set(after)):
        a = [json.dumps(r, sort_keys=True, default=str) for r in before.get(table, [])]
        b = [json.dumps(r, sort_keys=True, default=str) for r in after.get(table, [])]
        if a != b:
            gone, new = sorted(set(a) - set(b)), sorted(set(b) - set(a))
            problems.append(f"{table}: {len(a)} rows -> {len(b)}; only before ({len(gone)}): "
                            f"{[r[:600] for r in gone[:3]]}; only after ({len(new)}): {[r[:600] for r in new[:3]]}")
    assert not problems, "\n".join(problems)
