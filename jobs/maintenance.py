"""Delta table maintenance: compaction, checkpoints and vacuum, nightly.

Hourly MERGEs leave many small files per event date; compaction rewrites the recent partitions
into few large ones (readers then open a handful of files instead of hundreds), a checkpoint
keeps the log short, and vacuum deletes files no version within the retention still needs.
Sail has no OPTIMIZE or VACUUM, so this uses delta-rs (`deltalake`), which reads and writes
the same tables; it runs at 03:00 UTC, outside the hourly runs' busy minutes, and a commit
conflict with a concurrent writer is retried.
"""

import re
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from dagster import (
    Config,
    DefaultScheduleStatus,
    MetadataValue,
    OpExecutionContext,
    Output,
    RetryPolicy,
    ScheduleDefinition,
    job,
    op,
)

from lib.pools import LAKE_WRITES
from resources.lake import LakeResource

# Table key -> its date partition column (None: unpartitioned and small, compacted whole).
TABLES = {
    "curated/telemetry": "event_date",
    "curated/telemetry_1min": "event_date",
    "curated/telemetry_5min": "event_date",
    "curated/weather": "observed_date",
    "curated/features": "event_date",
    # Every hour's MERGE rewrites most of the hot state's rows, so it piles up removed files fastest.
    "curated/device_state": None,
    "curated/telemetry_object_counts": "landing_date",  # an upsert per hour's objects
    "quarantine/telemetry": "landing_date",
    "quarantine/weather": "landing_date",
}


# Files a vacuum may delete must have left the table this long ago: a reader of an older version or
# a writer's files in flight (written, not yet committed) are never pulled from under it, whatever
# the run config says (a retention of 0 would delete a concurrent writer's uncommitted files).
MIN_RETENTION_HOURS = 24


class MaintenanceConfig(Config):
    compact_days: int = 3  # late records keep touching the last few partitions; older ones are settled
    retention_hours: int = 168  # time travel and readers of older versions keep a week
    target_file_mb: int = 128


def retention_hours(config: MaintenanceConfig) -> int:
    return max(config.retention_hours, MIN_RETENTION_HOURS)


def maintain_table(
    lake: LakeResource, key: str, partition_column: str | None, config: MaintenanceConfig, today: date
) -> dict | None:
    from deltalake import DeltaTable

    the_lake = lake.lake()
    if not the_lake.exists(f"{key}/_delta_log"):
        return None
    table = DeltaTable(the_lake.uri(key), storage_options=lake.delta_storage_options())
    since = (today - timedelta(days=config.compact_days)).isoformat()
    recent = [(partition_column, ">=", since)] if partition_column else None
    compacted = table.optimize.compact(partition_filters=recent, target_size=config.target_file_mb * 1024 * 1024)
    table.create_checkpoint()
    # The retention is our own setting (a week by default), applied as configured but never below
    # MIN_RETENTION_HOURS (delta-rs's own floor is a week, hence enforce_retention_duration=False).
    # Full: also the files in no version at all, which a writer killed before its commit leaves
    # behind (once older than the retention, so a concurrent writer's files in flight are never touched).
    vacuumed = table.vacuum(
        retention_hours=retention_hours(config), dry_run=False, enforce_retention_duration=False, full=True
    )
    table.cleanup_metadata()
    staged = remove_stale_staging(the_lake.path(key), retention_hours(config)) if the_lake.is_local else 0
    return {
        "files_added": compacted.get("numFilesAdded", 0),
        "files_removed": compacted.get("numFilesRemoved", 0),
        "files_vacuumed": len(vacuumed) + staged,
        "version": table.version(),
    }


# A local write is staged as ``name#N`` and renamed when complete (object_store's LocalFileSystem);
# a writer killed in between leaves the staged file, which vacuum does not list as a data file.
STAGED = re.compile(r".+#\d+$")


def remove_stale_staging(table_dir: str, retention: int) -> int:
    """Delete the staged files of killed local writers once older than the retention; how many. On S3
    an aborted write is an incomplete multipart upload, which the bucket's lifecycle rule aborts."""
    cutoff = time.time() - retention * 3600
    stale = [
        f
        for f in Path(table_dir).rglob("*")
        if STAGED.match(f.name) and f.is_file() and "_delta_log" not in f.parts and f.stat().st_mtime < cutoff
    ]
    for f in stale:
        f.unlink(missing_ok=True)
    return len(stale)


@op(
    pool=LAKE_WRITES,  # commits to lake Delta tables (lib/pools.py)
    retry_policy=RetryPolicy(max_retries=3, delay=60),
    description="Compact, checkpoint and vacuum every lake Delta table.",
)
def maintain_delta_tables(context: OpExecutionContext, config: MaintenanceConfig, lake: LakeResource):
    today = datetime.now(UTC).date()
    if config.retention_hours < MIN_RETENTION_HOURS:
        context.log.warning(f"retention_hours {config.retention_hours} raised to the minimum, {MIN_RETENTION_HOURS}")
    results = {}
    for key, column in TABLES.items():
        result = maintain_table(lake, key, column, config, today)
        if result is None:
            context.log.info(f"{key}: no table yet")
            continue
        context.log.info(f"{key}: {result}")
        results[key] = result
    yield Output(
        None,
        metadata={
            "tables": MetadataValue.int(len(results)),
            "files_removed": MetadataValue.int(sum(r["files_removed"] for r in results.values())),
            "files_added": MetadataValue.int(sum(r["files_added"] for r in results.values())),
            "files_vacuumed": MetadataValue.int(sum(r["files_vacuumed"] for r in results.values())),
            "per_table": MetadataValue.json(results),
        },
    )


@job(description="Nightly Delta maintenance of the lake's tables (delta-rs compaction, checkpoint, vacuum).")
def delta_maintenance_job():
    maintain_delta_tables()


delta_maintenance_schedule = ScheduleDefinition(
    job=delta_maintenance_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Compact the last days' partitions, checkpoint and vacuum every night at 03:00 UTC.",
)
