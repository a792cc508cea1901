"""Historian readings and device telemetry in one curated table: telemetry wins where both exist.

The historian's readings (15-minute means) are curated into curated/telemetry beside the devices'
own telemetry (iot_lake.curated.history_job), so the 1- and 5-minute aggregates cover historical
periods too. Where both sources cover the same device, metric and 15-minute period (PERIOD_SECONDS,
UTC-aligned), the period keeps the telemetry only: it is the finer, first-hand record, and a
bucket must never mix a historian mean with the readings it was computed from. In either order:

- history curated after telemetry: the history job leaves out its readings of periods telemetry
  already has (counted as overlapped_by_telemetry) and displaces any older historian row of such a
  period;
- telemetry curated after history: the telemetry job displaces the historian rows of the periods
  its new rows fall in (``displace_historian``), in the same run.

Displacing deletes the historian rows from curated/telemetry and recomputes their 1- and 5-minute
buckets without them (a bucket left without rows is deleted). The aggregates are rewritten first
and the rows deleted last, so a run that dies in between leaves the rows to be found again.

The hourly telemetry job must not pay for this when there is no history (it never is, in steady
state): the history job marks each event date it writes rows in (``mark_historian_dates``, before
writing), and the telemetry job looks for historian rows only in marked dates, at the cost of one
existence check per event date of a batch. A mark outliving its rows only costs a look.
"""

from __future__ import annotations

from iot_lake.curated.aggregates import refresh_buckets
from iot_lake.lake import HISTORIAN_PREFIX, Lake
from iot_lake.spark.tables import open_table, staged

PERIOD_SECONDS = 15 * 60
# A historian row is known by where it came from, never by what a sender could write in a payload.
HISTORIAN_SOURCE = f"{HISTORIAN_PREFIX}/readings/"
MARKS = "curated/_historian/event_dates"
ROW_KEY = ("event_date", "device_id", "metric", "event_ts", "message_id")
PERIOD_KEY = ("device_id", "metric", "period")


def is_historian():
    from pyspark.sql import functions as F

    return F.col("source_object").startswith(HISTORIAN_SOURCE)


def with_period(df):
    """``df`` with its rows' 15-minute period (epoch seconds of its start), the precedence's grain."""
    from pyspark.sql import functions as F

    return df.withColumn("period", F.floor(F.unix_timestamp("event_ts") / PERIOD_SECONDS) * PERIOD_SECONDS)


def mark_historian_dates(lake: Lake, dates) -> None:
    for day in dates:
        key = f"{MARKS}/{day}"
        if not lake.exists(key):
            lake.write_text(key, "")


def historian_dates(lake: Lake, dates) -> list[str]:
    """The ``dates`` (ISO) that may hold historian rows."""
    return [day for day in sorted({str(d) for d in dates}) if lake.exists(f"{MARKS}/{day}")]


def telemetry_periods(curated, dates: list[str]):
    """The (device, metric, period) that device telemetry covers in ``dates``."""
    from pyspark.sql import functions as F

    rows = curated.where(F.col("event_date").isin(dates)).where(~is_historian())
    return with_period(rows.select("device_id", "metric", "event_ts")).select(*PERIOD_KEY).distinct()


def displace_historian(spark, lake: Lake, curated_key: str, periods, dates: list[str], table_format: str) -> int:
    """Delete the historian rows of ``dates`` in ``periods`` (device_id, metric, period) from
    ``curated_key`` and recompute their aggregate buckets without them; the rows displaced."""
    from pyspark.sql import functions as F

    table = open_table(spark, lake, curated_key, "event_date", table_format)
    if not dates or not table.exists():
        return 0
    curated = table.read().where(F.col("event_date").isin(dates))
    historian = with_period(curated.where(is_historian()).select(*ROW_KEY))
    staging = f"curated/_staging/displaced/{dates[0]}-{dates[-1]}"
    displaced = staged(
        spark, historian.join(periods.select(*PERIOD_KEY), list(PERIOD_KEY), "left_semi"), lake.uri(staging)
    )
    count = displaced.count()
    if count:
        remaining = curated.join(displaced.select(*ROW_KEY), list(ROW_KEY), "left_anti")
        refresh_buckets(spark, lake, displaced, remaining, table_format=table_format, drop_empty=True)
        table.delete_matching(displaced.select(*ROW_KEY), on=ROW_KEY)
    lake.delete(staging, recursive=True)
    return count
