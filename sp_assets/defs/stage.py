"""What every stage shares: its asset decorator settings, the categories of a run, timing and reporting."""

from __future__ import annotations

import contextlib
import datetime as dt
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    BetaWarning,
    DataVersion,
    MaterializeResult,
    MetadataValue,
)
from dagster_duckdb import DuckDBResource

from sp_assets.core.hashing import canonical_json, sha256_bytes, sha256_json
from sp_assets.core.judge_examples import examples_path
from sp_assets.core.policy import Category, Policy
from sp_assets.core import progress
from sp_assets.core.progress import ALL, Progress, Throttle
from sp_assets.defs.partitions import ACTIVE_POLICY, category_partitions
from sp_assets.defs.resources import PipelineSettings
from sp_assets.execution.memo import Memo
from sp_assets.execution.pool import WorkerPool
from sp_assets.storage import ImageStore, Store
from sp_assets.storage.images import images_root

# BackfillPolicy is marked beta; single-run backfills are what this project is built on.
warnings.filterwarnings("ignore", category=BetaWarning)

# Bump when a stage's code changes what it writes. The hash of the policy's rules is part of every
# version, so editing a rule marks every stage stale in the UI; the judge's examples file is part of
# the versions of the stages that judge (a stage downstream of them is stale only if their data changed).
CODE_VERSION = "1"


def _examples_version() -> str:
    path = examples_path(ACTIVE_POLICY.path)
    try:
        return f"+examples.{sha256_bytes(path.read_bytes())[:12]}"
    except OSError:
        return ""  # no examples file: only the scene-text judge needs one, and it says so when built

# Columns that differ between two runs of the same inputs and config; left out of data versions.
VOLATILE_COLUMNS = {"run_id", "created_at", "seconds", "computed_run_id"}


def asset_kwargs(description: str, checks: Sequence[AssetCheckSpec] = (), *, judges: bool = False
                 ) -> dict[str, Any]:
    """The decorator settings every stage shares; ``judges``: the stage asks the judge."""
    version = f"{CODE_VERSION}+policy.{ACTIVE_POLICY.rules_sha256[:12]}"
    return {
        "partitions_def": category_partitions,
        "backfill_policy": BackfillPolicy.single_run(),
        "code_version": version + (_examples_version() if judges else ""),
        "description": description,
        "check_specs": list(checks),
        "group_name": "safetypairs",
    }


def check(asset: str, name: str, description: str, blocking: bool = True) -> AssetCheckSpec:
    return AssetCheckSpec(name=name, asset=asset, description=description, blocking=blocking)


@dataclass
class Stage:
    """The per-run context of a stage: settings, storage, the categories in this run."""

    asset: str
    context: AssetExecutionContext
    settings: PipelineSettings
    duckdb: DuckDBResource
    policy: Policy = ACTIVE_POLICY
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    written: list[dict[str, Any]] = field(default_factory=list)
    stage_rows: list[dict[str, Any]] = field(default_factory=list)  # stage_runs rows, written with the result
    category: str = ALL  # the category being worked on (inside ``timed``), for the progress lines
    throttle: Throttle = field(default_factory=Throttle)

    def __post_init__(self) -> None:
        # The step is its run's only writer: short connections, retried while another run holds the file.
        self.store = Store.at(self.duckdb.database, lock_timeout_s=self.settings.db_lock_timeout_s)
        self.images = ImageStore(images_root(self.settings.root, self.settings.images_url))
        self.pool: WorkerPool = self.settings.worker_pool()
        self.run_id = self.context.run.run_id
        self.memo = Memo(self.store, self.images, self.pool, self.run_id, self.asset, self.settings.batch_items,
                         self.policy)
        self.memo.progress = self._progress
        progress.listen(self._progress)  # work inside model calls (a judge's build) reports as this stage
        self.now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)

    def _progress(self, role: str, done: int, total: int, seconds: float) -> None:
        """A ``core.progress`` line at INFO, every few seconds per role and category and at the end of each."""
        if self.throttle.due((self.category, role), done, total):
            self.context.log.info(Progress(self.asset, self.category, role, done, total, seconds).line())

    def memo_report(self) -> dict[str, Any]:
        """Model calls this step made and answers it reused, by role (for the materialization metadata)."""
        roles = sorted(set(self.memo.computed) | set(self.memo.reused))
        return {"model_calls": MetadataValue.json({r: {"computed": self.memo.computed[r], "reused": self.memo.reused[r]}
                                                   for r in roles})}

    def categories(self) -> list[Category]:
        """The run's categories (the partition keys of this step), in order."""
        keys = self.context.partition_keys if self.context.has_partition_key_range or self.context.has_partition_key else []
        return [self.policy.category(k) for k in keys]

    @contextlib.contextmanager
    def timed(self, category: str) -> Iterator[None]:
        t0 = time.perf_counter()
        self.category = category
        try:
            yield
        finally:
            self.category = ALL
            self.timings[category] = self.timings.get(category, 0.0) + time.perf_counter() - t0

    def record(self, category: str, n_in: int, n_out: int, n_rejected: int, profiles: Mapping[str, Any],
               rows: Sequence[Mapping[str, Any]] = ()) -> None:
        """Remember a category's counts and rows for the stage's report and the stage_runs table."""
        self.counts[category] = {"in": n_in, "out": n_out, "rejected": n_rejected}
        self.written.extend(dict(r) for r in rows)
        self.stage_rows.append({
            "run_id": self.run_id, "asset": self.asset, "category": category,
            "seconds": round(self.timings.get(category, 0.0), 3), "n_in": n_in, "n_out": n_out,
            "n_rejected": n_rejected, "profiles_json": canonical_json(profiles), "created_at": self.now,
        })

    def base_row(self, category: str) -> dict[str, Any]:
        return {"category": category, "run_id": self.run_id, "created_at": self.now}

    def data_version(self) -> DataVersion:
        stable = [{k: v for k, v in r.items() if k not in VOLATILE_COLUMNS} for r in self.written]
        stable.sort(key=canonical_json)
        return DataVersion(sha256_json(stable)[:16])

    def counts_table(self) -> str:
        lines = ["| category | in | out | rejected | seconds |", "|---|---:|---:|---:|---:|"]
        for cat, c in self.counts.items():
            lines.append(f"| {cat} | {c['in']} | {c['out']} | {c['rejected']} | {self.timings.get(cat, 0.0):.1f} |")
        return "\n".join(lines)

    def result(self, metadata: Mapping[str, Any], checks: Sequence[AssetCheckResult] = ()) -> MaterializeResult:
        total = {k: sum(c[k] for c in self.counts.values()) for k in ("in", "out", "rejected")}
        meta: dict[str, Any] = {
            "categories": MetadataValue.text(", ".join(self.counts)),
            "rows_in": total["in"],
            "rows_out": total["out"],
            "rows_rejected": total["rejected"],
            "per_category": MetadataValue.md(self.counts_table()),
            "seconds": round(time.perf_counter() - self.started, 2),
            "policy": MetadataValue.text(f"{self.policy.name} ({self.policy.path.name}, sha256 {self.policy.sha256[:12]})"),
            "duckdb": MetadataValue.path(str(self.duckdb.database)),
        }
        meta.update(metadata)
        # One row for the whole step (model loading included), for wall-time reports.
        self.store.append("stage_runs", [*self.stage_rows, {
            "run_id": self.run_id, "asset": self.asset, "category": "*", "seconds": meta["seconds"],
            "n_in": total["in"], "n_out": total["out"], "n_rejected": total["rejected"],
            "profiles_json": "{}", "created_at": self.now,
        }])
        return MaterializeResult(metadata=meta, data_version=self.data_version(), check_results=list(checks))


def check_result(name: str, passed: bool, description: str, blocking: bool = True, **metadata: Any) -> AssetCheckResult:
    return AssetCheckResult(
        check_name=name,
        passed=bool(passed),
        severity=AssetCheckSeverity.ERROR if blocking else AssetCheckSeverity.WARN,
        description=description,
        metadata={k: v for k, v in metadata.items()},
    )


def duplicates(rows: Sequence[Mapping[str, Any]], key: Sequence[str]) -> list[tuple[Any, ...]]:
    seen: set[tuple[Any, ...]] = set()
    dup: list[tuple[Any, ...]] = []
    for r in rows:
        k = tuple(r.get(c) for c in key)
        if k in seen:
            dup.append(k)
        seen.add(k)
    return dup


def counts_add_up(stage: Stage, what: str) -> AssetCheckResult:
    bad = {c: v for c, v in stage.counts.items() if v["in"] != v["out"] + v["rejected"]}
    return check_result(
        f"{stage.asset}_counts_add_up", not bad,
        f"{what}: in = accepted + rejected for every category" if not bad else f"counts do not add up: {bad}",
        per_category=MetadataValue.json(stage.counts),
    )


def no_duplicate_keys(stage: Stage, key: Sequence[str]) -> AssetCheckResult:
    dup = duplicates(stage.written, key)
    return check_result(
        f"{stage.asset}_has_unique_keys", not dup,
        f"no two rows share ({', '.join(key)})" if not dup else f"{len(dup)} duplicate keys, e.g. {dup[:3]}",
        n_duplicates=len(dup),
    )
