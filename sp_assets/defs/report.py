"""What a stage reports: per category its counts, time and rows, then the materialization (metadata, data
version, checks) and its ``stage_runs`` rows."""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping, Sequence

from dagster import AssetCheckResult, DataVersion, MaterializeResult, MetadataValue

from sp_assets.core.hashing import canonical_json, sha256_json
from sp_assets.core.policy import Policy
from sp_assets.core.progress import ALL
from sp_assets.storage import Store

# Columns that differ between two runs of the same inputs and config; left out of data versions.
VOLATILE_COLUMNS = {"run_id", "created_at", "seconds", "computed_run_id"}


@dataclass
class StageReport:
    """Counts, timings and rows of one step, by category, and the materialization made from them."""

    asset: str
    run_id: str
    now: Any  # the step's timestamp (UTC, naive), on every row it writes
    policy: Policy
    database: str
    started: float = field(default_factory=time.perf_counter)
    timings: dict[str, float] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    written: list[dict[str, Any]] = field(default_factory=list)
    stage_rows: list[dict[str, Any]] = field(default_factory=list)  # stage_runs rows, written with the result
    category: str = ALL  # the category being worked on (inside ``timed``), for the progress lines

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

    @staticmethod
    def model_calls(computed: Counter[str], reused: Counter[str]) -> dict[str, Any]:
        """Model calls the step made and answers it reused, by role (for the materialization metadata)."""
        roles = sorted(set(computed) | set(reused))
        return {"model_calls": MetadataValue.json({r: {"computed": computed[r], "reused": reused[r]} for r in roles})}

    def data_version(self) -> DataVersion:
        stable = [{k: v for k, v in r.items() if k not in VOLATILE_COLUMNS} for r in self.written]
        stable.sort(key=canonical_json)
        return DataVersion(sha256_json(stable)[:16])

    def counts_table(self) -> str:
        lines = ["| category | in | out | rejected | seconds |", "|---|---:|---:|---:|---:|"]
        for cat, c in self.counts.items():
            lines.append(f"| {cat} | {c['in']} | {c['out']} | {c['rejected']} | {self.timings.get(cat, 0.0):.1f} |")
        return "\n".join(lines)

    def result(self, store: Store, metadata: Mapping[str, Any], checks: Sequence[AssetCheckResult] = ()
               ) -> MaterializeResult:
        """The materialization; commits the step's ``stage_runs`` rows (one per category and one for the step)."""
        total = {k: sum(c[k] for c in self.counts.values()) for k in ("in", "out", "rejected")}
        meta: dict[str, Any] = {
            "categories": MetadataValue.text(", ".join(self.counts)),
            "rows_in": total["in"],
            "rows_out": total["out"],
            "rows_rejected": total["rejected"],
            "per_category": MetadataValue.md(self.counts_table()),
            "seconds": round(time.perf_counter() - self.started, 2),
            "policy": MetadataValue.text(f"{self.policy.name} ({self.policy.path.name}, sha256 {self.policy.sha256[:12]})"),
            "duckdb": MetadataValue.path(self.database),
        }
        meta.update(metadata)
        # One row for the whole step (model loading included), for wall-time reports.
        store.append("stage_runs", [*self.stage_rows, {
            "run_id": self.run_id, "asset": self.asset, "category": "*", "seconds": meta["seconds"],
            "n_in": total["in"], "n_out": total["out"], "n_rejected": total["rejected"],
            "profiles_json": "{}", "created_at": self.now,
        }])
        return MaterializeResult(metadata=meta, data_version=self.data_version(), check_results=list(checks))
