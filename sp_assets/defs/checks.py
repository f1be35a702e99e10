"""The asset checks the stages share: declared with the asset (``check``), evaluated from its report."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, MetadataValue

from sp_assets.defs.report import StageReport


def check(asset: str, name: str, description: str, blocking: bool = True) -> AssetCheckSpec:
    return AssetCheckSpec(name=name, asset=asset, description=description, blocking=blocking)


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


def counts_add_up(report: StageReport, what: str) -> AssetCheckResult:
    bad = {c: v for c, v in report.counts.items() if v["in"] != v["out"] + v["rejected"]}
    return check_result(
        f"{report.asset}_counts_add_up", not bad,
        f"{what}: in = accepted + rejected for every category" if not bad else f"counts do not add up: {bad}",
        per_category=MetadataValue.json(report.counts),
    )


def no_duplicate_keys(report: StageReport, key: Sequence[str]) -> AssetCheckResult:
    dup = duplicates(report.written, key)
    return check_result(
        f"{report.asset}_has_unique_keys", not dup,
        f"no two rows share ({', '.join(key)})" if not dup else f"{len(dup)} duplicate keys, e.g. {dup[:3]}",
        n_duplicates=len(dup),
    )
