"""The forecasting training data of a window of days, as plain Parquet files, as a Spark job.

    python -m iot_lake.forecast.training_data_job --lake ROOT --day 2026-11-20 --days 14 [--grain 5min|1min] \\
        --output models/forecast/training_data/2026-11-20

One row per (device, metric, bucket) of the ``--days`` event dates ending with ``--day``: the
bucket's mean as the target ``y``, its reading count, the site's time zone, the device model and
the site's temperature of that hour. The 5-minute grain is curated/features; the 1-minute grain is
curated/telemetry_1min with the attributes of the features row of the minute's 5-minute bucket.
Rows of a series inside a confirmed anomaly case (iot_lake.cases.feedback) are left out.

Plain Parquet, not Delta: a SageMaker training channel copies every file under its prefix and
cannot tell a Delta table's removed files from its live ones. The files under ``--output`` are
replaced as a whole, so a re-run yields each row once.
"""

from __future__ import annotations

import argparse
import json
import math
import posixpath
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, time, timedelta

import pyarrow.compute as pc
import pyarrow.parquet as pq
from dagster_pipes import PipesEnvVarParamsLoader, open_dagster_pipes

from iot_lake.cases.feedback import CASES_FEEDBACK, CONFIRMED, FALSE_POSITIVE
from iot_lake.curated.aggregates import AGGREGATE_TABLES, GRAINS
from iot_lake.curated.features_job import FEATURES, build_features
from iot_lake.lake import Lake, registry_day_for, registry_key
from iot_lake.spark.session import spark_session

OUTPUT_SCHEMA = {
    "device_id": "string",
    "metric": "string",
    "site_id": "string",
    "timezone": "string",
    "model": "string",
    "bucket_start": "timestamp",
    "y": "double",
    "readings": "bigint",
    "temperature_c": "double",
    "event_date": "date",
}
SORT_KEY = ["device_id", "metric", "bucket_start"]
# Bounds the rows the driver holds while it sorts one file.
ROWS_PER_FILE = 2_000_000


@dataclass
class TrainingDataReport:
    day: str
    days: int
    grain: str
    rows: int = 0
    series: int = 0  # distinct (device, metric)
    first_bucket: str | None = None
    last_bucket: str | None = None
    excluded_rows: int = 0  # rows of the window inside a confirmed case
    # Feedback cases overlapping the window, by resolution.
    confirmed_cases: int = 0
    false_positive_cases_kept: int = 0


def require_table(lake: Lake, key: str, first: date, last: date) -> None:
    if not lake.exists(f"{key}/_delta_log"):
        raise RuntimeError(f"{key} does not exist yet: materialize {key} for {first}..{last} first")


def site_timezones(spark, lake: Lake, day: date):
    snapshot = registry_day_for(lake, day)
    if snapshot is None:
        raise RuntimeError(f"no device registry landed yet (for {day}): materialize landing/device_registry first")
    with lake.open(registry_key(snapshot, "sites")) as f:
        return spark.createDataFrame(pq.read_table(f, columns=["site_id", "timezone"]))


SOURCES = ("features", "aggregates")


def fresh_features(spark, lake: Lake, first: date, last: date):
    """The features rows of the window built now from the hourly aggregates, as features_job builds a
    day: the feature table is only written after a day ends, a forecast made at 10:00 needs 09:55."""
    from functools import reduce

    # Every day of the window, those before the first registry snapshot too (the historian's history,
    # described by the first snapshot): skipping them left a fleet connected today without its past.
    if registry_day_for(lake, last) is None:
        raise RuntimeError(f"no device registry landed yet (for {last}): materialize landing/device_registry first")
    days = [first + timedelta(days=n) for n in range((last - first).days + 1)]
    return reduce(lambda a, b: a.unionByName(b), (build_features(spark, lake, d) for d in days))


def window_rows(spark, lake: Lake, grain: str, first: date, last: date, source: str = "features"):
    """Every bucket of the window at ``grain``, with the attributes of its features row."""
    from pyspark.sql import functions as F

    def read(key: str):
        require_table(lake, key, first, last)
        return spark.read.format("delta").load(lake.uri(key)).where(F.col("event_date").between(first, last))

    features = read(FEATURES) if source == "features" else fresh_features(spark, lake, first, last)
    if grain == "5min":
        return features.select(*_training_columns())
    five = GRAINS["5min"]
    attributes = features.select(
        "device_id", "metric", F.col("bucket_start").alias("bucket_5min"), "model", "temperature_c"
    )
    # A left join: a minute whose 5-minute features row is missing still counts, its attributes null.
    return (
        read(AGGREGATE_TABLES[grain])
        .withColumn("bucket_5min", F.timestamp_seconds(F.floor(F.unix_timestamp("bucket_start") / five) * five))
        .join(attributes, ["device_id", "metric", "bucket_5min"], "left")
        .select(*_training_columns())
    )


def _training_columns() -> list:
    """The training rows' columns, whichever grain they come from: the bucket's mean is the target."""
    from pyspark.sql import functions as F

    return [
        "device_id",
        "metric",
        "site_id",
        "model",
        "bucket_start",
        F.col("mean").alias("y"),
        "readings",
        "temperature_c",
        "event_date",
    ]


def window_cases(spark, lake: Lake, first: date, last: date):
    """The feedback cases overlapping the window, or None before the cases feature wrote any."""
    from pyspark.sql import functions as F

    if not lake.exists(f"{CASES_FEEDBACK}/_delta_log"):
        return None
    start = datetime.combine(first, time(), UTC)
    end = datetime.combine(last + timedelta(days=1), time(), UTC)
    return (
        spark.read.format("delta")
        .load(lake.uri(CASES_FEEDBACK))
        .where((F.col("start_ts") < F.lit(end)) & (F.col("end_ts") > F.lit(start)))
    )


def without_confirmed(rows, cases, seconds: int):
    """The rows of no confirmed case: a bucket [start, start + seconds) overlapping the case's
    [start_ts, end_ts) in the same series goes."""
    from pyspark.sql import functions as F

    confirmed = cases.where(F.col("resolution") == CONFIRMED).select(
        F.col("device_id").alias("case_device_id"), F.col("metric").alias("case_metric"), "start_ts", "end_ts"
    )
    bucket_end = F.timestamp_seconds(F.unix_timestamp("bucket_start") + seconds)
    overlaps = (
        (F.col("device_id") == F.col("case_device_id"))
        & (F.col("metric") == F.col("case_metric"))
        & (F.col("bucket_start") < F.col("end_ts"))
        & (bucket_end > F.col("start_ts"))
    )
    return rows.join(confirmed, overlaps, "left_anti")


def write_files(lake: Lake, df, output: str, files: int, report: TrainingDataReport) -> None:
    """Replace the Parquet files under ``output`` with ``df``, in ``files`` files.

    Written beside the output and swapped in, rather than deleting the output first: the Spark
    write is the long step and the one that fails, and meanwhile the previous snapshot stays
    whole. The swap (a delete and a move of a few files) is not atomic, but a reader in between
    finds no files rather than a mix of two snapshots.
    """
    folder, name = posixpath.split(output.rstrip("/"))
    staging = posixpath.join(folder, f"_{name}_staging")
    # Hash-partitioned by series, so no series is split across files.
    df.repartition(files, "device_id", "metric").write.mode("overwrite").parquet(lake.uri(staging))
    written = sort_files(lake, staging, report)
    for path in lake.fs.find(lake.path(staging)):  # the engine's own files (_SUCCESS, .crc) are no training data
        if path not in written:
            lake.fs.rm(path)
    lake.delete(output, recursive=True)
    lake.move_files(written, staging, output)
    lake.delete(staging, recursive=True)


def sort_files(lake: Lake, staging: str, report: TrainingDataReport) -> set[str]:
    """Sort each Spark file into part-NNNNN.parquet; fill the row stats of the report; return the paths written.

    Sail 0.7 drops an ORDER BY or sortWithinPartitions under a write (seen with pysail 0.7.2, see
    lakehq/sail#1862), so the driver sorts each file; at most ROWS_PER_FILE rows, it is cheap.
    """
    written: set[str] = set()
    series: set[tuple[str, str]] = set()
    bounds: list[datetime] = []
    spark_files = sorted(p for p in lake.fs.find(lake.path(staging)) if p.endswith(".parquet"))
    for number, path in enumerate(spark_files):
        with lake.fs.open(path, "rb") as f:
            table = pq.read_table(f).sort_by([(column, "ascending") for column in SORT_KEY])
        target = posixpath.join(lake.path(staging), f"part-{number:05d}.parquet")
        with lake.fs.open(target, "wb") as f:
            pq.write_table(table, f, compression="zstd")
        written.add(target)
        if path != target:
            lake.fs.rm(path)
        pairs = table.group_by(["device_id", "metric"]).aggregate([])
        series.update(zip(pairs["device_id"].to_pylist(), pairs["metric"].to_pylist()))
        bounds.extend(b for b in pc.min_max(table["bucket_start"]).as_py().values() if b is not None)
        report.rows += table.num_rows
    report.series = len(series)
    if bounds:
        report.first_bucket, report.last_bucket = min(bounds).isoformat(), max(bounds).isoformat()
    return written


def build_training_data(
    spark, lake: Lake, day: date, days: int, grain: str, output: str, source: str = "features"
) -> TrainingDataReport:
    from pyspark.sql import functions as F

    first = day - timedelta(days=days - 1)
    report = TrainingDataReport(day=day.isoformat(), days=days, grain=grain)
    zones = site_timezones(spark, lake, day)  # before the window is counted: a missing registry fails fast
    rows = window_rows(spark, lake, grain, first, day, source)
    total = rows.count()
    if not total:
        source = FEATURES if grain == "5min" else AGGREGATE_TABLES[grain]
        raise RuntimeError(f"{source} has no rows for {first}..{day}: materialize {source} for those days first")
    cases = window_cases(spark, lake, first, day)
    if cases is not None:
        counts = dict(cases.groupBy("resolution").count().collect())
        report.confirmed_cases = counts.get(CONFIRMED, 0)
        report.false_positive_cases_kept = counts.get(FALSE_POSITIVE, 0)
        rows = without_confirmed(rows, cases, GRAINS[grain])
    training = rows.join(zones, "site_id", "left").select(
        *(F.col(column).cast(kind).alias(column) for column, kind in OUTPUT_SCHEMA.items())
    )
    write_files(lake, training, output, math.ceil(total / ROWS_PER_FILE), report)
    report.excluded_rows = total - report.rows
    return report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lake", required=True)
    parser.add_argument("--day", required=True, type=date.fromisoformat)
    parser.add_argument("--days", required=True, type=int)
    parser.add_argument("--grain", choices=list(GRAINS), default="5min")
    parser.add_argument(
        "--source",
        choices=SOURCES,
        default="features",
        help="aggregates: build the features rows from curated/telemetry_5min now (for today's hours)",
    )
    parser.add_argument(
        "--output", required=True, help="key under the lake root, e.g. models/forecast/training_data/DAY"
    )
    args = parser.parse_args(argv)
    if args.days < 1:
        parser.error("--days must be at least 1")
    with open_dagster_pipes() as pipes:
        with spark_session("training-data") as spark:
            report = build_training_data(
                spark, Lake(args.lake), args.day, args.days, args.grain, args.output, args.source
            )
        pipes.log.info(f"training data {report.day}: {json.dumps(asdict(report))}")
        pipes.report_asset_materialization(
            metadata={
                "dagster/row_count": report.rows,
                "series": report.series,
                "first_bucket": report.first_bucket,
                "last_bucket": report.last_bucket,
                "excluded_rows": report.excluded_rows,
                "confirmed_cases": report.confirmed_cases,
                "false_positive_cases_kept": report.false_positive_cases_kept,
                "days": report.days,
                "grain": report.grain,
            },
        )
        if not PipesEnvVarParamsLoader().is_dagster_pipes_process():  # run by hand: show the report
            print(json.dumps(asdict(report)))


if __name__ == "__main__":
    main()
