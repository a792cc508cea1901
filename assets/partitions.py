"""Time partitions. Telemetry is hourly by arrival hour (UTC); registry and weather are daily.

``end_offset=1`` exposes the hour (day) in progress, so the sensor can request the partition a
landing object has just arrived in.
"""

from dagster import DailyPartitionsDefinition, HourlyPartitionsDefinition

PARTITIONS_START = "2025-01-01"

hourly_partitions = HourlyPartitionsDefinition(start_date=f"{PARTITIONS_START}-00:00", end_offset=1)
daily_partitions = DailyPartitionsDefinition(start_date=PARTITIONS_START, end_offset=1)
