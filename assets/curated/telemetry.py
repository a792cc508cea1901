from dagster import AssetCheckSpec, AssetExecutionContext, AssetKey, MaterializeResult, asset

from assets.landing.telemetry import OWNERS, TELEMETRY_KEY
from assets.partitions import hourly_partitions
from resources import LakeResource
from resources.spark import SparkRunner

CURATED_TELEMETRY_KEY = ["curated", "telemetry"]


@asset(
    key=CURATED_TELEMETRY_KEY,
    deps=[AssetKey(TELEMETRY_KEY), AssetKey(["landing", "device_registry"])],
    partitions_def=hourly_partitions,
    group_name="curated",
    owners=OWNERS,
    kinds={"spark", "delta", "s3"},
    description=(
        "Validated telemetry in canonical units, one row per (device, metric, event time, message id), "
        "Delta Lake at curated/telemetry partitioned by event_date. A partition is a landing hour: its "
        "records are MERGEd into their event-time partitions, so late records land where they belong. "
        "Rejected lines go to quarantine/telemetry with reason, raw line and source object. Built by "
        "the Spark job iot_lake/curated/telemetry_job.py through Dagster Pipes."
    ),
    check_specs=[
        AssetCheckSpec(
            "row_accounting", asset=CURATED_TELEMETRY_KEY, blocking=True,
            description="Lines landed = curated new + duplicates + quarantined, exactly.",
        )
    ],
)
def curated_telemetry(context: AssetExecutionContext, lake: LakeResource, spark: SparkRunner) -> MaterializeResult:
    hour = context.partition_time_window.start
    return spark.run(
        context, "iot_lake.curated.telemetry_job", ["--lake", lake.root, "--hour", hour.isoformat()]
    ).get_materialize_result()
