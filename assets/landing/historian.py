from datetime import UTC, datetime

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    asset,
)

from assets.landing.telemetry import OWNERS
from assets.partitions import daily_partitions
from iot_lake.sources.historian import land_readings, land_registry, readings_prefix
from lib.retries import permanent_errors
from resources.historian import HistorianResource
from resources.lake import LakeResource

DEVICE_REGISTRY_KEY = AssetKey(["landing", "device_registry"])
HISTORICAL_READINGS_KEY = AssetKey(["landing", "historical_readings"])


@asset(
    key=DEVICE_REGISTRY_KEY,
    partitions_def=daily_partitions,
    group_name="landing",
    owners=OWNERS,
    kinds={"s3", "sql", "parquet"},
    description=(
        "Daily snapshot of the device registry from the historical database (sites, devices, and "
        "each device metric's unit and physical range), as Parquet under "
        "landing/historical/device_registry/YYYY/MM/DD/."
    ),
    check_specs=[
        AssetCheckSpec(
            "registry_complete",
            asset=DEVICE_REGISTRY_KEY,
            blocking=True,
            description="Sites, devices and metric ranges are all present: validation depends on them.",
        )
    ],
)
def device_registry(
    context: AssetExecutionContext, lake: LakeResource, historian: HistorianResource
) -> MaterializeResult:
    day = context.partition_time_window.start.date()
    the_lake = lake.lake()
    with historian.engine() as engine, permanent_errors(context, "registry extract"):
        result = land_registry(the_lake, engine, day)
    empty = [t for t, n in result.rows.items() if n == 0]
    return MaterializeResult(
        metadata={
            **{f"{table}_rows": MetadataValue.int(n) for table, n in result.rows.items()},
            "dagster/row_count": MetadataValue.int(result.rows.get("devices", 0)),
            "files": MetadataValue.md("\n".join(f"- `{the_lake.uri(k)}`" for k in result.keys)),
            "database": MetadataValue.text(engine.url.render_as_string(hide_password=True)),
        },
        check_results=[
            AssetCheckResult(
                check_name="registry_complete",
                passed=not empty,
                metadata={"empty_tables": MetadataValue.text(", ".join(empty) or "none")},
            )
        ],
    )


@asset(
    key=HISTORICAL_READINGS_KEY,
    partitions_def=daily_partitions,
    group_name="landing",
    owners=OWNERS,
    kinds={"s3", "sql", "parquet"},
    description=(
        "Past readings from the historical database, extracted incrementally on loaded_at with a "
        "watermark derived from earlier extracts' manifests: re-running a day re-reads exactly its "
        "rows; days run out of order leave no gaps and no overlaps."
    ),
)
def historical_readings(
    context: AssetExecutionContext, lake: LakeResource, historian: HistorianResource
) -> MaterializeResult:
    day = context.partition_time_window.start.date()
    the_lake = lake.lake()
    with historian.engine() as engine, permanent_errors(context, "readings extract"):
        m = land_readings(the_lake, engine, day, now=datetime.now(UTC))
    context.log.info(f"extracted {m.rows} readings with {m.low or '-inf'} < loaded_at <= {m.high}")
    return MaterializeResult(
        metadata={
            "rows": MetadataValue.int(m.rows),
            "dagster/row_count": MetadataValue.int(m.rows),
            "watermark_low": MetadataValue.text(m.low or "(beginning)"),
            "watermark_high": MetadataValue.text(m.high),
            "files": MetadataValue.int(len(m.files)),
            "prefix": MetadataValue.path(the_lake.uri(readings_prefix(day))),
        }
    )
