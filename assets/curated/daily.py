"""Daily curated assets: site weather and the forecasting feature table."""

from dagster import AssetCheckSpec, AssetExecutionContext, AssetKey, BackfillPolicy, MaterializeResult, asset

from assets.curated.freshness import DAILY_FRESHNESS
from assets.curated.telemetry import AGGREGATE_KEYS
from assets.landing.historian import DEVICE_REGISTRY_KEY
from assets.landing.telemetry import OWNERS
from assets.landing.weather import LANDING_WEATHER_KEY
from assets.partitions import daily_partitions, days_of
from lib.pools import LAKE_WRITES
from resources.lake import LakeResource
from resources.spark import SparkRunner

CURATED_WEATHER_KEY = AssetKey(["curated", "weather"])
CURATED_FEATURES_KEY = AssetKey(["curated", "features"])


@asset(
    pool=LAKE_WRITES,  # commits to lake Delta tables (lib/pools.py)
    key=CURATED_WEATHER_KEY,
    deps=[LANDING_WEATHER_KEY, DEVICE_REGISTRY_KEY],
    partitions_def=daily_partitions,
    # A backfill of many days is one run: one Spark session for all of them, not a run per day.
    backfill_policy=BackfillPolicy.single_run(),
    group_name="curated",
    owners=OWNERS,
    kinds={"spark", "delta", "s3"},
    freshness_policy=DAILY_FRESHNESS,
    description=(
        "Hourly weather per registered site, Delta Lake at curated/weather partitioned by observed_date. "
        "Rows need a site in the device registry, an observation on the file's day and every value in "
        "its physical range; a (site, hour) reported twice keeps the later file. Rejected rows and "
        "unusable files go to quarantine/weather with a reason."
    ),
    check_specs=[
        AssetCheckSpec(
            "row_accounting",
            asset=CURATED_WEATHER_KEY,
            blocking=True,
            description="Rows read = curated + duplicates + quarantined, exactly.",
        )
    ],
)
def curated_weather(context: AssetExecutionContext, lake: LakeResource, spark: SparkRunner):
    days = [a for day in days_of(context.partition_time_window) for a in ("--day", day.isoformat())]
    yield from spark.run(context, "iot_lake.curated.weather_job", ["--lake", lake.root, *days]).get_results()


@asset(
    pool=LAKE_WRITES,  # commits to lake Delta tables (lib/pools.py)
    key=CURATED_FEATURES_KEY,
    deps=[AGGREGATE_KEYS["5min"], CURATED_WEATHER_KEY, DEVICE_REGISTRY_KEY],
    partitions_def=daily_partitions,
    # A backfill of many days is one run: one Spark session for all of them, not a run per day.
    backfill_policy=BackfillPolicy.single_run(),
    group_name="curated",
    owners=OWNERS,
    kinds={"spark", "delta", "s3"},
    freshness_policy=DAILY_FRESHNESS,
    description=(
        "Forecasting features, one row per (device, metric, 5-minute bucket) of the day: the bucket's "
        "aggregates, calendar in UTC and site-local time, device attributes from the registry and the "
        "site's weather of that hour. Delta Lake at curated/features partitioned by event_date; a "
        "rebuild replaces the day."
    ),
)
def curated_features(context: AssetExecutionContext, lake: LakeResource, spark: SparkRunner) -> MaterializeResult:
    days = [a for day in days_of(context.partition_time_window) for a in ("--day", day.isoformat())]
    return spark.run(context, "iot_lake.curated.features_job", ["--lake", lake.root, *days]).get_materialize_result()
