"""What hourly schedules run: the hour that has ended."""

from __future__ import annotations

from datetime import UTC, timedelta

from dagster import RunRequest, ScheduleEvaluationContext


def hour_that_ended(context: ScheduleEvaluationContext) -> RunRequest:
    """The run of the hourly partition that ended before the tick.

    Hourly partitions end with the hour in progress (the landing sensor needs it), so a schedule
    built from the partitioned job would run that one; an hourly schedule runs the hour that has ended.
    """
    hour = context.scheduled_execution_time.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    key = (hour - timedelta(hours=1)).strftime("%Y-%m-%d-%H:%M")
    return RunRequest(run_key=key, partition_key=key)
