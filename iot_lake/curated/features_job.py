"""The forecasting feature table for event days, as a Spark job.

    python -m iot_lake.curated.features_job --lake ROOT --day 2026-11-20 [--day 2026-11-21 ...]

One row per (device, metric, 5-minute bucket): the bucket's aggregates, calendar features in UTC
and in the site's local time, the device's attributes from the registry snapshot of that day (the
first snapshot for a day before it: the historian's history predates the first extract),
and the site's weather observed in the bucket's hour (null where the provider had no usable
row; the coverage is reported). Several ``--day``s are built one after the other in one session.
The day's slice of curated/features is replaced, so re-runs
are idempotent and a day rebuilt after late data picks it up.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from datetime import date

import pyarrow.parquet as pq
from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

from iot_lake.curated.aggregates import AGGREGATE_TABLES
from iot_lake.curated.weather_job import CURATED_WEATHER, replace_day
from iot_lake.lake import Lake, registry_day_for, registry_key
from iot_lake.spark.session import spark_session

FEATURES = "curated/features"
SOURCE = AGGREGATE_TABLES["5min"]
WEATHER_COLUMNS = ["temperature_c", "humidity_pct", "wind_speed_ms", "precipitation_mm"]
FEATURE_COLUMNS = [
    "device_id",
    "metric",
    "bucket_start",
    "site_id",
    "unit",
    "readings",
    "mean",
    "min",
    "max",
    "stddev",
    "last",
    "hour_of_day",
    "day_of_week",
    "local_hour",
    "local_day_of_week",
    "is_weekend_local",
    "model",
    "firmware",
    "device_age_days",
    "latitude",
    "longitude",
    *WEATHER_COLUMNS,
    "event_date",
]


@dataclass
class FeaturesReport:
    day: str
    rows: int = 0
    devices: int = 0
    weather_coverage: float = 0.0  # share of rows with the site's weather for their hour


def build_features(spark, lake: Lake, day: date):
    from pyspark.sql import functions as F

    # A day before the first registry snapshot (the historian's history) takes the first snapshot.
    snapshot = registry_day_for(lake, day)
    if snapshot is None:
        raise RuntimeError(f"no device registry landed yet (for {day}): materialize landing/device_registry first")
    if not lake.exists(f"{SOURCE}/_delta_log"):
        raise RuntimeError(f"{SOURCE} does not exist yet: materialize the curated telemetry hours of {day} first")

    def registry(table: str, columns: list[str]):
        with lake.open(registry_key(snapshot, table)) as f:
            return spark.createDataFrame(pq.read_table(f, columns=columns))

    devices = registry("devices", ["device_id", "model", "firmware", "installed_on"])
    sites = registry("sites", ["site_id", "latitude", "longitude", "timezone"])
    buckets = spark.read.format("delta").load(lake.uri(SOURCE)).where(F.col("event_date") == F.lit(day))
    features = buckets.join(devices, "device_id", "left").join(sites, "site_id", "left")
    if lake.exists(f"{CURATED_WEATHER}/_delta_log"):
        weather = (
            spark.read.format("delta")
            .load(lake.uri(CURATED_WEATHER))
            .where(F.col("observed_date") == F.lit(day))
            .select("site_id", F.date_trunc("hour", "observed_at").alias("weather_hour"), *WEATHER_COLUMNS)
        )
        features = features.withColumn("weather_hour", F.date_trunc("hour", "bucket_start")).join(
            weather, ["site_id", "weather_hour"], "left"
        )
    else:
        for column in WEATHER_COLUMNS:
            features = features.withColumn(column, F.lit(None).cast("double"))
    local = F.from_utc_timestamp("bucket_start", F.col("timezone"))
    return (
        features.withColumn("hour_of_day", F.hour("bucket_start"))
        .withColumn("day_of_week", F.dayofweek("bucket_start"))
        .withColumn("local_hour", F.hour(local))
        .withColumn("local_day_of_week", F.dayofweek(local))
        .withColumn("is_weekend_local", F.dayofweek(local).isin(1, 7))
        # datediff is an int on Spark but a bigint on Sail: one type, the one Glue declares.
        .withColumn("device_age_days", F.datediff("event_date", "installed_on").cast("int"))
        .select(*FEATURE_COLUMNS)
    )


def build_features_day(spark, lake: Lake, day: date) -> FeaturesReport:
    from pyspark.sql import functions as F

    replace_day(lake, FEATURES, build_features(spark, lake, day), "event_date", day)
    stats = (
        spark.read.format("delta")
        .load(lake.uri(FEATURES))
        .where(F.col("event_date") == F.lit(day))
        .agg(
            F.count(F.lit(1)).alias("rows"),
            F.countDistinct("device_id").alias("devices"),
            F.avg(F.col("temperature_c").isNotNull().cast("double")).alias("coverage"),
        )
        .first()
    )
    return FeaturesReport(
        day=day.isoformat(),
        rows=stats["rows"],
        devices=stats["devices"],
        weather_coverage=round(float(stats["coverage"] or 0.0), 4),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--day", required=True, action="append", dest="days", type=date.fromisoformat)
    args = parser.parse_args(argv)
    with open_dagster_pipes() as pipes:
        reports = []
        with spark_session("build-features") as spark:
            for day in sorted(set(args.days)):
                reports.append(build_features_day(spark, Lake(args.lake), day))
                pipes.log.info(f"features {day}: {json.dumps(asdict(reports[-1]))}")
        rows = sum(r.rows for r in reports)
        coverage = sum(r.weather_coverage * r.rows for r in reports) / rows if rows else 0.0
        pipes.report_asset_materialization(
            metadata={
                "dagster/row_count": rows,
                "days": len(reports),
                "devices": max(r.devices for r in reports),
                "weather_coverage": round(coverage, 4),
            },
        )
        if not PipesEnvVarParamsLoader().is_dagster_pipes_process():  # run by hand: show the report
            print(json.dumps([asdict(r) for r in reports] if len(reports) > 1 else asdict(reports[0])))


if __name__ == "__main__":
    main()
