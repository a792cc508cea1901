"""Curated history: the historian's extracted readings, validated into curated telemetry."""

from dagster import AssetCheckSpec, AssetExecutionContext, AssetKey, BackfillPolicy, asset

from assets.landing.historian import DEVICE_REGISTRY_KEY, HISTORICAL_READINGS_KEY
from assets.landing.telemetry import OWNERS
from assets.partitions import daily_partitions, days_of
from iot_lake.curated.history_job import ASSET_KEY
from lib.pools import LAKE_WRITES
from resources.lake import LakeResource
from resources.spark import SparkRunner

CURATED_HISTORY_KEY = AssetKey(ASSET_KEY.split("/"))


@asset(
    pool=LAKE_WRITES,  # commits to lake Delta tables (lib/pools.py)
    key=CURATED_HISTORY_KEY,
    deps=[HISTORICAL_READINGS_KEY, DEVICE_REGISTRY_KEY],
    partitions_def=daily_partitions,
    # A backfill of many extract days is one run: one Spark session for all of them.
    backfill_policy=BackfillPolicy.single_run(),
    group_name="curated",
    owners=OWNERS,
    kinds={"spark", "delta", "s3"},
    description=(
        "The historian's readings in the curated layer. A partition is an extract day of "
        "landing/historical_readings (its rows cover past periods): they are validated with the telemetry "
        "record rules (registry ids, units to canonical, physical ranges, timestamps) and MERGEd into "
        "curated/telemetry, one row per 15-minute reading (message_id historian:<device>:<metric>:<epoch>), "
        "the latest load of a reading winning; the 1- and 5-minute aggregates of their buckets are "
        "refreshed. Telemetry wins where both cover a device, metric and 15-minute period. Rejected rows go "
        "to quarantine/historian with a reason. Built by the Spark job iot_lake/curated/history_job.py "
        "through Dagster Pipes."
    ),
    check_specs=[
        AssetCheckSpec(
            "row_accounting",
            asset=CURATED_HISTORY_KEY,
            blocking=True,
            description=(
                "Rows read = curated new + updated + duplicates + overlapped by telemetry + quarantined, "
                "exactly, and every row the extract's manifest lists was read."
            ),
        ),
        AssetCheckSpec(
            "landed_schema",
            asset=CURATED_HISTORY_KEY,
            description=(
                "The landed Parquet parts have the extract's schema; a new, missing (renamed) or retyped "
                "column is a WARN with the differences, and the run still curates what it can read."
            ),
        ),
    ],
)
def curated_historical_readings(context: AssetExecutionContext, lake: LakeResource, spark: SparkRunner):
    days = [a for day in days_of(context.partition_time_window) for a in ("--day", day.isoformat())]
    yield from spark.run(context, "iot_lake.curated.history_job", ["--lake", lake.root, *days]).get_results()
