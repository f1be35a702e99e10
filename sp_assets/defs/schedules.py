"""A cron schedule that materializes every category partition in one single-run backfill."""

from __future__ import annotations

import os

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    define_asset_job,
    schedule,
)

from sp_assets.defs.partitions import category_partitions

# Every stage, all categories; the partition range runs in one process (single-run backfill).
all_categories_job = define_asset_job(
    "all_categories", selection=AssetSelection.groups("safetypairs"),
)


@schedule(
    job=all_categories_job,
    cron_schedule=os.environ.get("SP_SCHEDULE_CRON", "0 3 * * 1"),
    default_status=DefaultScheduleStatus.STOPPED,
    description="Weekly refresh of every category (off until switched on in the UI). Cron from SP_SCHEDULE_CRON.",
)
def weekly_all_categories(context: ScheduleEvaluationContext):
    keys = category_partitions.get_partition_keys()
    return RunRequest(
        run_key=context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else None,
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
    )
