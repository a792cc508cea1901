"""Curated rows per landing object (curated/telemetry_object_counts), kept by the curated telemetry job.

The warehouse's mart_row_accounting counts, per landing hour, the curated rows of that hour's
objects. Counted over curated/telemetry by every hourly dbt run, that cost grew with the table
(benchmarks/growth: 0.26 s on an hour of tables, 5-11 s on 30 days). The job writes one row per
landing object instead: its key, landing hour and curated rows; the mart sums this small table.

The counts are exact, and a re-run writes the same ones:

- a row of curated/telemetry with a landing object as its source is inserted only by a curation of
  that object and never deleted (displacing deletes historian rows only, iot_lake.curated.precedence);
- its event date is that of its line, so all of an object's rows lie in the event dates of the
  valid lines a curation of it reads (the batch's ``dates``): counting the batch's objects' rows in
  those partitions, after the MERGE, is each object's whole count;
- that count replaces the stored one (upsert on the object, never an append): a re-run, which
  inserts nothing, or a run retried after dying between the MERGE and this write, stores the same.

An object of the batch without curated rows gets a row of 0 (counted; the mart skips it).

History: a lake curated before this table existed has no counts. The first run that finds no
table counts every landing object in curated/telemetry (one scan of the table, once) and creates
it, so the mart never misses an hour of that history. Until that run the table is missing, the
warehouse reads it as typed and empty (iot_lake/warehouse/tables.py), and the mart, finding no
counts, counts curated/telemetry as it did before (dbt_project/models/marts/mart_row_accounting.sql).
"""

from __future__ import annotations

from datetime import UTC, datetime

from iot_lake.lake import TELEMETRY_PREFIX, Lake, telemetry_hour_of_key
from iot_lake.spark.tables import open_table

OBJECT_COUNTS = "curated/telemetry_object_counts"
_ROWS_DDL = "source_object string, landing_s bigint, curated_rows bigint, counted_s bigint, landing_date date"


def count_objects(spark, lake: Lake, curated, keys: list[str], dates, table_format: str = "delta") -> int:
    """Store the curated rows of each landing object in ``keys`` (or, the first time, of every
    landing object in ``curated``, the curated/telemetry table); the objects written."""
    table = open_table(spark, lake, OBJECT_COUNTS, "landing_date", table_format)
    backfill = not table.exists()
    counted = dict.fromkeys(keys, 0) | _curated_rows(curated, keys, dates, everything=backfill)
    rows = _rows(spark, counted)
    if backfill:
        table.create(rows)
    else:
        days = sorted({telemetry_hour_of_key(k).date() for k in keys})
        table.upsert(rows, on=("landing_date", "source_object"), partitions=days)
    return len(counted)


def _curated_rows(curated, keys: list[str], dates, everything: bool) -> dict[str, int]:
    from pyspark.sql import functions as F

    if not curated.exists() or not (everything or dates):
        return {}
    rows = curated.read()
    if everything:
        rows = rows.where(F.col("source_object").startswith(f"{TELEMETRY_PREFIX}/"))
    else:  # the batch's event dates: partition pruning keeps this an hour's work whatever the history
        rows = rows.where(F.col("event_date").isin(list(dates))).where(F.col("source_object").isin(keys))
    return {r["source_object"]: r["count"] for r in rows.groupBy("source_object").count().collect()}


def _rows(spark, counted: dict[str, int]):
    """The counts as table rows. Hours travel as epoch seconds, made timestamps by the engine, so
    they are the same instants whatever the session time zone (as the quarantine's landing_hour)."""
    from pyspark.sql import functions as F

    now = int(datetime.now(UTC).timestamp())
    data = [
        (key, int(hour.timestamp()), n, now, hour.date())
        for key, n in sorted(counted.items())
        # A key outside the landing layout has no landing hour: the mart never counted it either.
        if (hour := telemetry_hour_of_key(key)) is not None
    ]
    df = spark.createDataFrame(data, _ROWS_DDL)
    return df.select(
        "source_object",
        F.timestamp_seconds("landing_s").alias("landing_hour"),
        "curated_rows",
        F.timestamp_seconds("counted_s").alias("counted_at"),
        "landing_date",
    )
