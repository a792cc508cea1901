from datetime import UTC, datetime, timedelta

from dagster import AssetCheckSpec, AssetExecutionContext, AssetKey, AssetSpec, BackfillPolicy, multi_asset

from assets.curated.freshness import HOURLY_FRESHNESS
from assets.landing.historian import DEVICE_REGISTRY_KEY
from assets.landing.telemetry import LANDING_TELEMETRY_KEY, OWNERS, partition_hours
from assets.partitions import hourly_partitions
from iot_lake.curated.aggregates import AGGREGATE_TABLES
from iot_lake.curated.state import DEVICE_STATE
from iot_lake.settings import load_settings
from lib.pools import LAKE_WRITES
from resources.lake import LakeResource
from resources.spark import SparkRunner

CURATED_TELEMETRY_KEY = AssetKey(["curated", "telemetry"])
# The aggregates' keys are their tables' paths: curated/telemetry_1min, curated/telemetry_5min.
AGGREGATE_KEYS = {grain: AssetKey(table.split("/")) for grain, table in AGGREGATE_TABLES.items()}
DEVICE_STATE_KEY = AssetKey(DEVICE_STATE.split("/"))
# The state step stamps updated_at on the Spark driver's clock: rows changed a little before this
# process's start are pushed too (a row pushed twice is kept by the conditional write).
CLOCK_SKEW = timedelta(minutes=5)
_AGGREGATE_DOC = (
    "{grain} aggregates of curated telemetry per device and metric: readings, mean, min, max, sample "
    "stddev, last value and its time. Delta Lake at curated/telemetry_{grain}, partitioned by event_date. "
    "A landing hour recomputes exactly the buckets its records fall in, from all curated rows in them, "
    "so buckets reopened by late records are updated and re-runs give the same table."
)


@multi_asset(
    pool=LAKE_WRITES,  # commits to lake Delta tables (lib/pools.py)
    specs=[
        AssetSpec(
            CURATED_TELEMETRY_KEY,
            deps=[LANDING_TELEMETRY_KEY, DEVICE_REGISTRY_KEY],
            kinds={"spark", "delta", "s3"},
            owners=OWNERS,
            freshness_policy=HOURLY_FRESHNESS,
            description=(
                "Validated telemetry in canonical units, one row per (device, metric, event time, message id), "
                "Delta Lake at curated/telemetry partitioned by event_date. A partition is a landing hour: its "
                "records are MERGEd into their event-time partitions, so late records land where they belong. "
                "Rejected lines go to quarantine/telemetry with reason, raw line and source object. Built by "
                "the Spark job iot_lake/curated/telemetry_job.py through Dagster Pipes."
            ),
            skippable=True,
        ),
        *(
            AssetSpec(
                key,
                deps=[CURATED_TELEMETRY_KEY],
                kinds={"spark", "delta", "s3"},
                owners=OWNERS,
                description=_AGGREGATE_DOC.format(grain=grain),
                skippable=True,
                freshness_policy=HOURLY_FRESHNESS,
            )
            for grain, key in AGGREGATE_KEYS.items()
        ),
        AssetSpec(
            DEVICE_STATE_KEY,
            deps=[CURATED_TELEMETRY_KEY],
            kinds={"spark", "delta", "s3"},
            owners=OWNERS,
            description=(
                "Hot state for the serving API: the latest reading per device and metric (value, unit, event "
                "time, site). Delta Lake at curated/device_state, unpartitioned, one row per series. A landing "
                "hour MERGEs in its latest reading per series where newer than the stored one, so late records "
                "never overwrite a newer state and re-runs change nothing."
            ),
            skippable=True,
            freshness_policy=HOURLY_FRESHNESS,
        ),
    ],
    partitions_def=hourly_partitions,
    backfill_policy=BackfillPolicy.single_run(),  # one Spark session for a whole range of hours
    group_name="curated",
    can_subset=True,
    check_specs=[
        AssetCheckSpec(
            "row_accounting",
            asset=CURATED_TELEMETRY_KEY,
            blocking=True,
            description="Lines landed = curated new + duplicates + quarantined, exactly.",
        )
    ],
)
def curated_telemetry(context: AssetExecutionContext, lake: LakeResource, spark: SparkRunner):
    """One Spark session curates the landing hours of the run and refreshes the aggregates and the hot
    state they touch."""
    hours = partition_hours(context)
    selected = context.selected_asset_keys
    steps = (
        (["curate"] if CURATED_TELEMETRY_KEY in selected else [])
        + [grain for grain, key in AGGREGATE_KEYS.items() if key in selected]
        + (["state"] if DEVICE_STATE_KEY in selected else [])
    )
    started = datetime.now(UTC)
    yield from spark.run(
        context,
        "iot_lake.curated.telemetry_job",
        ["--lake", lake.root, "--steps", ",".join(steps), *(a for h in hours for a in ("--hour", h.isoformat()))],
    ).get_results()
    if "state" in steps:
        push_hot_state(context, lake, started - CLOCK_SKEW)


def push_hot_state(context: AssetExecutionContext, lake: LakeResource, since: datetime) -> None:
    """In production, the serving API's Lambda reads the hot state from DynamoDB: push the rows the
    state step changed (conditional writes, so an older reading never replaces a newer one)."""
    settings = load_settings()
    if not settings.is_prod:
        return  # locally the API reads curated/device_state itself
    if not settings.state_table:
        context.log.warning("IOT_LAKE_STATE_TABLE is not set: the API's DynamoDB hot state is not updated")
        return
    from iot_lake.api.hot_state import sync_state_table

    counts = sync_state_table(
        lake.lake(), lake.delta_storage_options(), settings.state_table, since, settings.aws_region
    )
    context.log.info(f"hot state pushed to DynamoDB {settings.state_table}: {counts}")
