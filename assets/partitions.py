"""Time partitions. Telemetry is hourly by arrival hour (UTC); registry and weather are daily.

Hourly partitions include the hour in progress (``end_offset=1``) so the sensor can request the
partition a landing object has just arrived in. Daily partitions end with the last complete day,
so the nightly schedule extracts the day that just finished, not the 30 minutes of the new one.
"""

import warnings
from datetime import date, timedelta

from dagster import DailyPartitionsDefinition, HourlyPartitionsDefinition, TimeWindow

# Single-run backfills (BackfillPolicy on @asset) are beta in Dagster 1.13; we rely on them on purpose.
warnings.filterwarnings("ignore", message="Parameter `backfill_policy` of function")

PARTITIONS_START = "2025-01-01"

hourly_partitions = HourlyPartitionsDefinition(start_date=f"{PARTITIONS_START}-00:00", end_offset=1)
daily_partitions = DailyPartitionsDefinition(start_date=PARTITIONS_START)
# The warehouse's hourly facts: dbt rebuilds a whole UTC day per microbatch, so a partition is that
# day, the one in progress included (its hourly runs rebuild it as its hours arrive).
current_day_partitions = DailyPartitionsDefinition(start_date=PARTITIONS_START, end_offset=1)


def days_of(window: TimeWindow) -> list[date]:
    """The days a daily partition window covers (one, or a single-run backfill's range)."""
    start, end = window.start.date(), window.end.date()
    return [start + timedelta(days=i) for i in range(max((end - start).days, 1))]
