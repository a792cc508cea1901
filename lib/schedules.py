"""What hourly schedules run: the hour that has ended (or its day, for assets partitioned by day)."""

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


def day_of_hour_that_ended(context: ScheduleEvaluationContext) -> RunRequest:
    """The run of the daily partition holding the hour that ended before the tick, one run per hour
    (the run key is the hour): assets rebuilt a whole day at a time as its hours arrive."""
    hour = hour_that_ended(context).partition_key
    return RunRequest(run_key=hour, partition_key=hour[:10])
