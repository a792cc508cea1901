from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
)

from assets.partitions import hourly_partitions
from iot_lake.sources.telemetry import inventory_key, land_inventory
from resources import LakeResource

OWNERS = ["team:data-platform"]
TELEMETRY_KEY = ["landing", "telemetry"]

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
    key=TELEMETRY_KEY,
    partitions_def=hourly_partitions,
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
            asset=TELEMETRY_KEY,
            description="Every landing object of the hour decompresses to its end (warns; the curated layer salvages what it can).",
        )
    ],
)
def landing_telemetry(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    hour = context.partition_time_window.start
    the_lake = lake.lake()
    inv = land_inventory(the_lake, hour)
    totals = inv.totals
    for bad in inv.unreadable:
        context.log.warning(f"unreadable landing object {bad.key}: {bad.error} ({bad.records} records before the error)")
    rows = [
        TableRecord(
            {"key": o.key.rsplit("/", 1)[-1], "bytes": o.bytes, "records": o.records,
             "malformed_lines": o.malformed_lines, "readable": o.readable, "error": o.error or ""}
        )
        for o in inv.objects
    ]
    return MaterializeResult(
        metadata={
            **{k: MetadataValue.int(v) for k, v in totals.items()},
            "dagster/row_count": MetadataValue.int(totals["records"]),
            "prefix": MetadataValue.path(the_lake.uri(inv.prefix)),
            "inventory": MetadataValue.path(the_lake.uri(inventory_key(hour))),
            "objects_table": MetadataValue.table(rows, schema=_OBJECT_SCHEMA),
        },
        check_results=[
            AssetCheckResult(
                check_name="objects_readable",
                passed=not inv.unreadable,
                severity=AssetCheckSeverity.WARN,
                metadata={
                    "unreadable_objects": MetadataValue.int(len(inv.unreadable)),
                    "reasons": MetadataValue.md(
                        "\n".join(f"- `{o.key}`: {o.error}" for o in inv.unreadable) or "none"
                    ),
                },
            )
        ],
    )
