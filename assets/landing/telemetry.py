from datetime import datetime, timedelta

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from assets.partitions import hourly_partitions
from iot_lake.lake import TELEMETRY_PREFIX
from iot_lake.sources.telemetry import inventory_key, land_inventory
from lib.retries import permanent_errors
from resources.lake import LakeResource

OWNERS = ["team:data-platform"]
LANDING_TELEMETRY_KEY = AssetKey(["landing", "telemetry"])

_OBJECT_SCHEMA = TableSchema(
    columns=[
        TableColumn("key", "string"),
        TableColumn("bytes", "int"),
        TableColumn("records", "int"),
        TableColumn("malformed_lines", "int"),
        TableColumn("readable", "bool"),
        TableColumn("error", "string"),
    ]
)


@asset(
    key=LANDING_TELEMETRY_KEY,
    partitions_def=hourly_partitions,
    # A backfill of many hours is one run: one step instead of a run per hour.
    backfill_policy=BackfillPolicy.single_run(),
    group_name="landing",
    owners=OWNERS,
    kinds={"s3", "kinesis"},
    description=(
        "Device telemetry as AWS IoT Core -> Kinesis Data Firehose delivers it: gzip NDJSON objects "
        "under landing/telemetry/YYYY/MM/DD/HH/ (arrival hour, UTC). Materializing a partition "
        "inventories that hour: every object, its bytes and record count, and each unreadable "
        "object with the reason. The inventory is written to landing/_inventory/telemetry/."
    ),
    check_specs=[
        AssetCheckSpec(
            "objects_readable",
            asset=LANDING_TELEMETRY_KEY,
            description=(
                "Every landing object of the hour decompresses to its end "
                "(warns; the curated layer salvages what it can)."
            ),
        )
    ],
)
def landing_telemetry(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    the_lake = lake.lake()
    hours = partition_hours(context)
    with permanent_errors(context, "landing inventory"):  # a poison input fails once, not for ten minutes
        inventories = [land_inventory(the_lake, hour) for hour in hours]
    objects = [o for inv in inventories for o in inv.objects]
    unreadable = [o for inv in inventories for o in inv.unreadable]
    totals = {k: sum(inv.totals[k] for inv in inventories) for k in inventories[0].totals}
    for bad in unreadable:
        context.log.warning(
            f"unreadable landing object {bad.key}: {bad.error} ({bad.records} records before the error)"
        )
    # Dagster copies a range run's metadata into the materialization of each of its hours: the
    # window's every object (a week: 2,016 rows, ~470 KB) in each of 168 events was ~80 MB of event
    # log and a sixth of the main job's orchestration time. A range run lists the unreadable
    # objects; every object of an hour stays in its inventory in the lake (``inventory``).
    listed = objects if len(hours) == 1 else unreadable
    rows = [
        TableRecord(
            {
                "key": o.key.split("/", 2)[-1],
                "bytes": o.bytes,
                "records": o.records,
                "malformed_lines": o.malformed_lines,
                "readable": o.readable,
                "error": o.error or "",
            }
        )
        for o in listed
    ]
    return MaterializeResult(
        metadata={
            **{k: MetadataValue.int(v) for k, v in totals.items()},
            "dagster/row_count": MetadataValue.int(totals["records"]),
            "hours": MetadataValue.int(len(hours)),
            "prefix": MetadataValue.path(the_lake.uri(inventories[0].prefix if len(hours) == 1 else TELEMETRY_PREFIX)),
            "inventory": MetadataValue.path(the_lake.uri(inventory_key(hours[0]))),
            "objects_table": MetadataValue.table(rows, schema=_OBJECT_SCHEMA),
        },
        check_results=[
            AssetCheckResult(
                check_name="objects_readable",
                passed=not unreadable,
                severity=AssetCheckSeverity.WARN,
                metadata={
                    "unreadable_objects": MetadataValue.int(len(unreadable)),
                    "reasons": MetadataValue.md("\n".join(f"- `{o.key}`: {o.error}" for o in unreadable) or "none"),
                },
            )
        ],
    )


def partition_hours(context) -> list[datetime]:
    """The hours of the run's partition or, for a single-run backfill, of its partition range."""
    window = context.partition_time_window
    return [window.start + timedelta(hours=i) for i in range(int((window.end - window.start) / timedelta(hours=1)))]
