"""Freshness policies of the curated layer. Dagster's freshness daemon (part of `dagster dev` and
of any deployment's daemon) evaluates them, so a stalled feed shows as WARN/FAIL in the UI even
when nothing runs."""

from datetime import timedelta

from dagster import FreshnessPolicy

# Telemetry arrives continuously and the sensor runs each hour as it lands: more than two hours
# without a curated update means the feed or the job stalled.
HOURLY_FRESHNESS = FreshnessPolicy.time_window(fail_window=timedelta(hours=2), warn_window=timedelta(minutes=75))
# Daily tables are built once a night (weather when its files land, features at 01:15 UTC).
DAILY_FRESHNESS = FreshnessPolicy.time_window(fail_window=timedelta(hours=26), warn_window=timedelta(hours=25))
