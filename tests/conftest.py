"""Shared test helpers: run (part of) the graph in a temporary data folder on a small demo pool."""

from __future__ import annotations

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


def store_at(data_root: Path) -> Store:
    return Store.at(data_root / "safetypairs.duckdb", read_only=True)


@pytest.fixture
def data_root(tmp_path: Path) -> Path:
    return tmp_path / "data"
