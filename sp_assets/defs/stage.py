"""What every stage shares: its asset decorator settings and the wiring of a step (``Stage``); what it
reports is in ``report.py``, its checks in ``checks.py``."""

from __future__ import annotations

import datetime as dt
import warnings
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from dagster import AssetCheckResult, AssetCheckSpec, AssetExecutionContext, BackfillPolicy, BetaWarning, MaterializeResult
from dagster_duckdb import DuckDBResource

from sp_assets.core import progress
from sp_assets.core.hashing import sha256_bytes
from sp_assets.core.judge_examples import examples_path
from sp_assets.core.policy import Category, Policy
from sp_assets.core.progress import Progress, Throttle
from sp_assets.defs.partitions import ACTIVE_POLICY, category_partitions
from sp_assets.defs.report import StageReport
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


@dataclass
class Stage:
    """The wiring of one step: its settings, policy, store, image store, worker pool and memo, the
    categories of the run, and its ``report``. The store opens a connection only for each read or commit."""

    asset: str
    context: AssetExecutionContext
    settings: PipelineSettings
    duckdb: DuckDBResource
    policy: Policy = ACTIVE_POLICY
    throttle: Throttle = field(default_factory=Throttle)

    def __post_init__(self) -> None:
        # The step is its run's only writer: short connections, retried while another run holds the file.
        self.store = Store.at(self.duckdb.database, lock_timeout_s=self.settings.db_lock_timeout_s)
        self.images = ImageStore(images_root(self.settings.root, self.settings.images_url))
        self.pool: WorkerPool = self.settings.worker_pool()
        self.run_id = self.context.run.run_id
        self.memo = Memo(self.store, self.images, self.pool, self.run_id, self.asset, self.settings.batch_items,
                         self.policy)
        self.memo.progress = self.progress
        progress.listen(self.progress)  # work inside model calls (a judge's build) reports as this stage
        self.now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        self.report = StageReport(self.asset, self.run_id, self.now, self.policy, str(self.duckdb.database))

    def progress(self, role: str, done: int, total: int, seconds: float) -> None:
        """A ``core.progress`` line at INFO, every few seconds per role and category and at the end of each."""
        category = self.report.category
        if self.throttle.due((category, role), done, total):
            self.context.log.info(Progress(self.asset, category, role, done, total, seconds).line())

    def categories(self) -> list[Category]:
        """The run's categories (the partition keys of this step), in order."""
        keys = self.context.partition_keys if self.context.has_partition_key_range or self.context.has_partition_key else []
        return [self.policy.category(k) for k in keys]

    def base_row(self, category: str) -> dict[str, Any]:
        return {"category": category, "run_id": self.run_id, "created_at": self.now}

    def model_calls(self) -> dict[str, Any]:
        """Model calls this step made and answers it reused, by role (for the materialization metadata)."""
        return StageReport.model_calls(self.memo.computed, self.memo.reused)

    def result(self, metadata: Mapping[str, Any], checks: Sequence[AssetCheckResult] = ()) -> MaterializeResult:
        """The materialization, after the step's ``stage_runs`` rows are committed."""
        return self.report.result(self.store, metadata, checks)
