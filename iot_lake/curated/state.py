"""Hot state: the latest reading per (device, metric), what the serving API answers ``/state`` from.

A small Delta table at curated/device_state, one row per series, unpartitioned (its size is the
fleet's series count, not time). After a landing hour is curated, the latest of its records per
series is MERGEd in, replacing a row only when it is newer by (event_ts, message_id), the order the
aggregates' ``last`` uses. So a late, older reading never overwrites a newer state, hours may be
refreshed in any order, and a re-run changes nothing (not even ``updated_at``).

The same SQL MERGE runs on Sail locally and on delta-spark (EMR Serverless, Glue).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from iot_lake.lake import Lake
from iot_lake.sources.telemetry import inventoried_keys
from iot_lake.spark.tables import open_table

DEVICE_STATE = "curated/device_state"
SERIES_KEY = ("device_id", "metric")
STATE_COLUMNS = ["device_id", "metric", "site_id", "event_ts", "message_id", "value", "unit", "updated_at"]
# The ordering of readings, on both sides of the MERGE: a later event time, or at the same event
# time a greater message id (unique among readings of one series at one time).
NEWER = "s.event_ts > t.event_ts OR (s.event_ts = t.event_ts AND s.message_id > t.message_id)"


def latest_readings(rows):
    """Curated rows -> the latest reading per series (greatest event_ts, then message_id)."""
    from pyspark.sql import functions as F

    # As in aggregates.aggregate: max event time first, then order only the rows at that time.
    newest = rows.groupBy(*SERIES_KEY).agg(F.max("event_ts").alias("event_ts"))
    at_newest = rows.join(newest, [*SERIES_KEY, "event_ts"], "left_semi")
    return at_newest.groupBy(*SERIES_KEY).agg(
        F.max("event_ts").alias("event_ts"),
        F.max("message_id").alias("message_id"),
        F.max_by("site_id", "message_id").alias("site_id"),
        F.max_by("value", "message_id").alias("value"),
        F.max_by("unit", "message_id").alias("unit"),
    )


def refresh_state(
    spark,
    lake: Lake,
    hours: datetime | Sequence[datetime],
    event_dates: list[str],
    curated_key: str,
    table_format: str = "delta",
) -> int:
    """MERGE the latest reading per series among the records landed in ``hours`` into the hot state;
    returns how many series the hours had a reading for (each may or may not have been newer)."""
    hours = [hours] if isinstance(hours, datetime) else list(hours)
    keys = [key for hour in hours for key in inventoried_keys(lake, hour)]
    return refresh_state_from(spark, lake, keys, event_dates, curated_key, table_format)


def refresh_state_from(
    spark, lake: Lake, objects: list[str], event_dates: list[str], curated_key: str, table_format: str = "delta"
) -> int:
    """``refresh_state`` for the curated records of these landing objects (in these event dates)."""
    from pyspark.sql import functions as F

    curated = open_table(spark, lake, curated_key, "event_date", table_format)
    if not objects or not event_dates or not curated.exists():
        return 0
    landed = curated.read().where(F.col("event_date").isin(event_dates)).where(F.col("source_object").isin(objects))
    latest = latest_readings(landed).withColumn("updated_at", F.current_timestamp()).select(*STATE_COLUMNS)
    series = latest.count()
    if series:
        merge_state(open_table(spark, lake, DEVICE_STATE, None, table_format), latest)
    return series


def merge_state(table, latest) -> None:
    if table.exists():
        table.merge_newer(latest, on=SERIES_KEY, newer=NEWER)
    else:
        table.create(latest)
