"""1- and 5-minute aggregates of curated telemetry: the lake's replacement for streaming windows.

Per (device, metric, bucket): count, mean, min, max, sample stddev (null for a single reading)
and the last value with its time. A landing hour only changes the buckets its own records fall
in, so a refresh recomputes exactly those buckets from curated rows (all rows in the bucket,
whichever hour they landed in) and MERGEs them, updating buckets that late records reopened.
Recomputing from the curated table instead of folding the batch into stored sums keeps a re-run
after a crash exact: it cannot count a record twice or miss one.

Buckets use epoch arithmetic rather than Spark's window(), which Sail does not support; it is the
same on every engine.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from iot_lake.lake import Lake, dates_between
from iot_lake.sources.telemetry import inventoried_keys
from iot_lake.spark.tables import open_table

GRAINS = {"1min": 60, "5min": 300}
AGGREGATE_TABLES = {grain: f"curated/telemetry_{grain}" for grain in GRAINS}
BUCKET_KEY = ("device_id", "metric", "bucket_start")
_BUCKET_ROW = ("event_date", *BUCKET_KEY)  # an aggregate row's key, its partition first
AGGREGATE_COLUMNS = [
    "device_id",
    "site_id",
    "metric",
    "unit",
    "bucket_start",
    "readings",
    "mean",
    "min",
    "max",
    "stddev",
    "last",
    "last_ts",
    "event_date",
]


_VALUES = tuple(c for c in AGGREGATE_COLUMNS if c not in _BUCKET_ROW)  # what a bucket's refresh may change


def with_bucket(df, seconds: int):
    from pyspark.sql import functions as F

    return df.withColumn("bucket_start", F.timestamp_seconds(F.floor(F.unix_timestamp("event_ts") / seconds) * seconds))


def aggregate(rows, seconds: int):
    """Curated rows -> one row per (device, metric, bucket). A pure transform, engine-independent.

    The last value (and the site and unit beside it) is the reading with the greatest
    (event_ts, message_id). Ordering by that pair as a struct (max_by over a struct) is several
    times slower on Sail than everything else here together, so: the bucket's latest event time
    comes with the other aggregates, and only the rows at that time (one, bar ties) are ordered by
    message_id, which is unique among them (event time and message id are half the natural key).
    """
    from pyspark.sql import functions as F

    bucketed = with_bucket(rows, seconds)
    stats = _with_mean_and_stddev(
        bucketed.groupBy(*BUCKET_KEY).agg(
            F.count(F.lit(1)).alias("readings"),
            F.array_sort(F.collect_list("value")).alias("values"),
            F.min("value").alias("min"),
            F.max("value").alias("max"),
            F.max("event_ts").alias("last_ts"),
        )
    )
    latest = bucketed.join(
        stats.select(*BUCKET_KEY, F.col("last_ts").alias("event_ts")), [*BUCKET_KEY, "event_ts"], "left_semi"
    )
    last = latest.groupBy(*BUCKET_KEY).agg(
        F.max_by("site_id", "message_id").alias("site_id"),
        F.max_by("unit", "message_id").alias("unit"),
        F.max_by("value", "message_id").alias("last"),
    )
    return (
        stats.join(last, list(BUCKET_KEY))
        # A float sum can put the mean of equal readings (a stuck sensor) an ulp outside them.
        .withColumn("mean", F.least(F.greatest("mean", "min"), "max"))
        .withColumn("event_date", F.to_date("bucket_start"))
        .select(*AGGREGATE_COLUMNS)
    )


def _with_mean_and_stddev(stats):
    """Mean and sample stddev summed over each bucket's values in sorted order.

    avg() and stddev_samp() add in whatever order the engine's partitions meet, so the same rows
    gave means an ulp apart from run to run (10k of 17k 5-minute buckets differed between two
    partitionings of the same 2M rows); the forecasts trained on them then differed too. A sum
    over the sorted values is one sum whatever the plan. The stddev is two-pass (squared
    distances from that mean), also more accurate than the one-pass formula.
    """
    from pyspark.sql import functions as F

    n = F.size("values")
    mean = F.aggregate("values", F.lit(0.0), lambda acc, x: acc + x) / n
    squares = F.aggregate("values", F.lit(0.0), lambda acc, x: acc + (x - F.col("mean")) * (x - F.col("mean")))
    return stats.withColumn("mean", mean).withColumn("stddev", F.when(n > 1, F.sqrt(squares / (n - 1)))).drop("values")


@dataclass
class AggregateReport:
    hours: list[str]
    buckets: dict[str, int] = field(default_factory=dict)  # grain -> buckets recomputed (new, changed or as stored)


def refresh_aggregates(
    spark,
    lake: Lake,
    hours: datetime | Sequence[datetime],
    event_dates: list[str],
    curated_key: str,
    grains: list[str] | None = None,
    table_format: str = "delta",
) -> AggregateReport:
    """Recompute and MERGE every bucket that the records landed in ``hours`` (one or several) fall in.

    Several hours at once (a batch of the telemetry job) leave the same tables as one refresh per
    hour: each bucket is recomputed from all its curated rows either way, and a batch writes a
    bucket its hours share once instead of once per hour.
    """
    from pyspark.sql import functions as F

    hours = [hours] if isinstance(hours, datetime) else list(hours)
    report = AggregateReport(hours=[hour.isoformat() for hour in hours])
    keys = [key for hour in hours for key in inventoried_keys(lake, hour)]
    curated_table = open_table(spark, lake, curated_key, "event_date", table_format)
    if not keys or not event_dates or not curated_table.exists():
        return report
    curated = curated_table.read().where(F.col("event_date").isin(event_dates))
    landed = curated.where(F.col("source_object").isin(keys))
    report.buckets = refresh_buckets(spark, lake, landed, curated, grains, table_format)
    return report


def refresh_buckets(
    spark,
    lake: Lake,
    touched_rows,
    curated,
    grains: list[str] | None = None,
    table_format: str = "delta",
    drop_empty: bool = False,
) -> dict[str, int]:
    """Recompute from ``curated`` (the curated rows of the dates concerned) and MERGE every bucket
    a row of ``touched_rows`` falls in; grain -> buckets written.

    ``drop_empty``: the touched buckets are deleted first, so a bucket ``curated`` no longer has a
    row in disappears instead of keeping its old aggregate (rows displaced by precedence, see
    iot_lake.curated.precedence); the buckets written are then counted, not assumed.
    """
    from pyspark.sql import functions as F

    buckets: dict[str, int] = {}
    # Bounding the reread by time lets the engine skip files of other hours in the same dates.
    lo, hi = touched_rows.agg(F.min("event_ts"), F.max("event_ts")).first()
    if lo is None:
        return buckets
    for grain in grains or list(GRAINS):
        seconds = GRAINS[grain]
        touched = with_bucket(touched_rows, seconds).select(*BUCKET_KEY).distinct()
        # Whole buckets: the last one also holds readings later than the hour's latest.
        start, end = _floor(lo, seconds), _floor(hi, seconds) + timedelta(seconds=seconds)
        window_rows = curated.where((F.col("event_ts") >= start) & (F.col("event_ts") < end))
        # Aggregate every bucket of the window, then keep the touched ones: the semi-join then
        # matches buckets against buckets instead of every reading against them.
        aggregates = aggregate(window_rows, seconds).join(touched, list(BUCKET_KEY), "left_semi")
        table = open_table(spark, lake, AGGREGATE_TABLES[grain], "event_date", table_format)
        # Every bucket of the window is dated by its start (aggregate), so these partitions hold them
        # all; a day either side, as the window's bounds come back from Spark in the process's time zone.
        days = dates_between(start - timedelta(days=1), end + timedelta(days=1))
        if drop_empty:
            if table.exists():
                touched_rows_of = touched.withColumn("event_date", F.to_date("bucket_start"))
                table.delete_matching(touched_rows_of, on=_BUCKET_ROW, partitions=days)
            buckets[grain] = merge_aggregates(table, aggregates, partitions=days)
        else:
            # Each touched bucket has readings, so it yields exactly one aggregate row: counting the
            # buckets is much cheaper than running the aggregation once more just to count it.
            buckets[grain] = merge_aggregates(table, aggregates, written=touched.count(), partitions=days)
    return buckets


def _floor(ts: datetime, seconds: int) -> datetime:
    return datetime.fromtimestamp(int(ts.timestamp()) // seconds * seconds, tz=ts.tzinfo)


def merge_aggregates(table, aggregates, written: int | None = None, partitions=()) -> int:
    """Upsert buckets by (event_date, device, metric, bucket_start); returns how many were written
    (``written`` when the caller knows it)."""
    # MERGE's own metrics differ between engines (Sail reports rows rewritten), so count the source.
    if written is None:
        written = aggregates.count()
    if table.exists():
        # A bucket recomputed to the same values stays as it is: a re-run of an hour (a retry, the
        # automation re-curating the hour in progress as its objects land) rewrites no file for it.
        table.upsert(aggregates, on=_BUCKET_ROW, partitions=partitions, compare=_VALUES)
    else:
        table.create(aggregates)
    return written
