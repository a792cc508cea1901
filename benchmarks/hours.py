"""Which hourly partitions the live benchmarks (latency, soak) send to and check, planned from the clock.

Telemetry is partitioned by arrival hour, and ops/deviations is scored by an eager automation
condition over the hour in progress and the hour before it (whose last buffer lands after the
turn). A reading of an hour older than that is curated but not scored by the automation. So a
benchmark that expects a case puts its readings in an hour that stays in progress until the case
can open (the conservative choice: it does not rely on the look-back), and the hours it delivers to
must have their forecasts. The functions here decide
that from a given time, so they are tested just before and after an hour boundary.
"""

from __future__ import annotations

from datetime import datetime, timedelta

HOUR = timedelta(hours=1)
BUFFER = timedelta(minutes=5)  # the live hour's Firehose buffer in both benchmarks


def hour_of(t: datetime) -> datetime:
    return t.replace(minute=0, second=0, microsecond=0)


def floor_buffer(t: datetime) -> datetime:
    """The start of the 5-minute buffer window ``t`` falls in."""
    return t.replace(minute=t.minute // 5 * 5, second=0, microsecond=0)


def hours_in(start: datetime, end: datetime) -> list[datetime]:
    """The hourly partitions that arrivals in [start, end) land in."""
    hours, hour = [], hour_of(start)
    while hour < end:
        hours.append(hour)
        hour += HOUR
    return hours


def measured_hour(now: datetime, lead: timedelta) -> datetime:
    """The hour latency measures in: the one in progress if ``lead`` (a warm-up and a measurement)
    still fits in it, else the next one, which the benchmark waits for. Waiting at most ``lead`` is
    the honest choice: a reading written so late that its hour ends before its case can open is
    never scored by the automation, so measuring it would time out rather than measure latency."""
    hour = hour_of(now)
    return hour if hour + HOUR - now >= lead else hour + HOUR


def warm_upto(now: datetime, hour: datetime) -> datetime:
    """The end of the warm start's deliveries: the buffers of ``hour`` closed by ``now``, at least its
    first one (early in the hour none has closed yet, and the hour's deviations need some minutes)."""
    return max(floor_buffer(now), hour + BUFFER)


def soak_end(start: datetime, minutes: float, min_live: timedelta) -> datetime:
    """Where the soak's deliveries end: ``minutes`` after ``start`` (whole buffers), moved on until
    the hour it ends in (the one the automation scores) holds ``min_live`` of data. Data never comes
    ahead of the clock, so a soak ending just after an hour turned (one that crossed it, or started
    early in an hour) would score only minutes of readings and open no case to check for
    duplicates; it runs on, delivering and killing, until the hour it scores has enough."""
    end = floor_buffer(start + timedelta(minutes=minutes))
    return max(end, hour_of(end) + min_live)


def uncovered(hours: list[datetime], forecast_first: datetime, forecast_last: datetime) -> list[datetime]:
    """Those of ``hours`` outside the forecasts the setup made (an hour is scored against its own)."""
    return [h for h in hours if not forecast_first <= h <= forecast_last]
