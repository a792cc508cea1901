"""Tick time of landing_sensor with a month of landing history against a day of it.

    .venv/bin/python -m benchmarks.sensor              # 30 days against 1, 60 ticks each (~20 s)
    .venv/bin/python -m benchmarks.sensor --quick      # 7 days against 1, 10 ticks each

Two local lakes laid out as the bucket, both ending at the current hour: one with a day of
Firehose objects (a few small ones an hour) and weather files, one with a month. After a first
tick (which lists everything once), each tick lands one object in the current hour and evaluates
the sensor from the previous cursor, alternating between the lakes so both see the same load.

Figure: the median tick with the month; reference, measured in the same run: the median tick with
the day. The sensor lists only the folders that can still receive objects, so the ratio should
stay near 1 (target <= 1.2) however long the history. Also shown, without a target: one listing of
the whole landing history of the month, what every tick cost before.
"""

from __future__ import annotations

import gzip
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from benchmarks.results import Result, json_option, write
from iot_lake.lake import TELEMETRY_PREFIX, WEATHER_PREFIX, Lake, telemetry_hour_prefix, weather_day_prefix

TARGET_RATIO = 1.2
OBJECTS_PER_HOUR = 4
SITES = 2
BODY = gzip.compress(b'{"device_id": "dev-0001", "metric": "temperature", "value": 21.5}\n', mtime=0)
console = Console(stderr=True)


def land_history(root: Path, days: int, now: datetime) -> Lake:
    """``days`` of hours up to the current one, ``OBJECTS_PER_HOUR`` objects each; a weather file per site and day."""
    lake = Lake(str(root))
    current = now.replace(minute=0, second=0, microsecond=0)
    for h in range(days * 24):
        hour = current - timedelta(hours=h)
        for i in range(OBJECTS_PER_HOUR):
            lake.write_bytes(f"{telemetry_hour_prefix(hour)}/iot-lake-telemetry-1-{hour:%Y-%m-%d-%H}-{i}.gz", BODY)
    for d in range(1, days + 1):
        day = (current - timedelta(days=d)).date()
        for s in range(SITES):
            lake.write_bytes(f"{weather_day_prefix(day)}/weather_site-{s:02d}_{day:%Y%m%d}.csv", b"site_id\n")
    return lake


class Ticker:
    """One lake and the sensor's cursor over it, as the daemon keeps it between ticks."""

    def __init__(self, lake: Lake):
        from dagster import DagsterInstance

        self.lake, self.cursor, self.landed = lake, None, 0
        self.instance = DagsterInstance.ephemeral()

    def tick(self) -> float:
        from dagster import build_sensor_context

        from resources.lake import LakeResource
        from sensors.landing import landing_sensor

        context = build_sensor_context(
            cursor=self.cursor, resources={"lake": LakeResource(root=self.lake.url)}, instance=self.instance
        )
        t0 = time.perf_counter()
        result = landing_sensor(context)
        elapsed = time.perf_counter() - t0
        self.cursor = result.cursor
        return elapsed

    def land_one(self) -> None:
        self.landed += 1
        hour = datetime.now(UTC)
        self.lake.write_bytes(f"{telemetry_hour_prefix(hour)}/iot-lake-telemetry-1-bench-{self.landed}.gz", BODY)


def full_listing_seconds(lake: Lake) -> float:
    t0 = time.perf_counter()
    [*lake.list(TELEMETRY_PREFIX), *lake.list(WEATHER_PREFIX)]
    return time.perf_counter() - t0


def measure(days: int, ticks: int, workdir: Path) -> dict[str, float]:
    now = datetime.now(UTC)
    with console.status(f"landing 1 and {days} days of objects"):
        short, long = (Ticker(land_history(workdir / f"lake-{n}d", n, now)) for n in (1, days))
    first = {"short": short.tick(), "long": long.tick()}  # everything, once
    times: dict[str, list[float]] = {"short": [], "long": []}
    with console.status(f"{ticks} ticks on each lake"):
        for _ in range(ticks):
            for name, ticker in (("short", short), ("long", long)):
                ticker.land_one()
                times[name].append(ticker.tick())
    return {
        "short": statistics.median(times["short"]),
        "long": statistics.median(times["long"]),
        "first_long": first["long"],
        "listing_long": full_listing_seconds(long.lake),
    }


def results_of(m: dict[str, float], days: int) -> list[Result]:
    day_tick = m["short"] * 1000
    return [
        Result(
            benchmark="sensor",
            measure=f"landing_sensor tick, {days} days landed",
            value=m["long"] * 1000,
            unit="ms",
            reference="the same tick, 1 day landed",
            reference_value=day_tick,
            target=TARGET_RATIO,
        ),
        Result(
            benchmark="sensor",
            measure=f"one listing of the {days} days (each tick, before)",
            value=m["listing_long"] * 1000,
            unit="ms",
            reference="landing_sensor tick, 1 day landed",
            reference_value=day_tick,
            note=f"first tick (lists everything once): {m['first_long'] * 1000:.0f} ms",
        ),
    ]


@click.command()
@click.option("--days", default=30, show_default=True, help="Days of landing history of the long lake.")
@click.option("--ticks", default=60, show_default=True, help="Timed ticks on each lake.")
@click.option("--quick", is_flag=True, help="7 days, 10 ticks")
@click.option(
    "--workdir",
    type=click.Path(path_type=Path),
    default=None,
    help="Where the lakes go (default: a temporary directory, removed afterwards).",
)
@json_option
def main(days: int, ticks: int, quick: bool, workdir: Path | None, json_path: Path | None) -> None:
    if quick:
        days, ticks = 7, 10
    with tempfile.TemporaryDirectory(prefix="iot-lake-bench-sensor-") as tmp:
        m = measure(days, ticks, workdir or Path(tmp))
    results = results_of(m, days)
    table = Table(title=f"landing_sensor: median of {ticks} ticks, {OBJECTS_PER_HOUR} objects an hour")
    for column in ("measure", "ms", "reference ms", "ratio", "target"):
        table.add_column(column)
    for r in results:
        verdict = "" if r.met is None else ("[green]met[/]" if r.met else "[red]MISSED[/]")
        table.add_row(r.measure, f"{r.value:.1f}", f"{r.reference_value:.1f}", f"{r.ratio:.2f}", verdict)
    Console(width=None if sys.stdout.isatty() else 120).print(table)
    write(json_path, results)
