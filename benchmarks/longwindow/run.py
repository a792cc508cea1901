"""A long window end to end: 30 days of 5-minute data for a few devices, imported and run as one.

    .venv/bin/python -m benchmarks.longwindow [--devices 3] [--days 30] [--json out.json]

Issue 15 asks that 30 days of 5-minute data for a few devices runs the whole chain in minutes, not
one run per hour. On a fresh lake: ``iot-lake import`` of one CSV per device (a daily and weekly
pattern with noise, 1% of the points missing, timestamps a few seconds off the grid), then
``python -m jobs.main --no-simulate`` over every imported day but the first (its history): curated
as one run, 29 nightly trainings, 29 one-run forecast ranges, the deviations and the warehouse.

Reference, in the same run: the DuckDB reference of the curated path (benchmarks/curate/duck.py)
over the same landed hours in one pass, the bare cost of the central transform.
"""

from __future__ import annotations

import os
import tempfile
from datetime import date, datetime
from pathlib import Path

import click
import numpy as np
import pandas as pd
from rich.console import Console

from benchmarks.dagster_dev import clean_env
from benchmarks.demo.run import duck_reference
from benchmarks.realdata.run import _failed_runs, import_series, run_pipeline
from benchmarks.results import Result, load_average, write

START = date(2026, 9, 7)  # a Monday
TARGET_S = 900.0  # "in minutes": a quarter of an hour on 2 cores, training every night included
console = Console(stderr=True)


def write_series(path: Path, days: int, seed: int) -> None:
    """A 5-minute series with a daily and a weekly pattern and noise, 1% of its points missing and
    every timestamp up to 20 s off the grid, as a real logger writes it."""
    rng = np.random.default_rng(seed)
    t = pd.date_range(datetime.combine(START, datetime.min.time()), periods=days * 288, freq="5min")
    hours = t.hour.to_numpy() + t.minute.to_numpy() / 60
    weekday = t.dayofweek.to_numpy()
    level = 50 + 10 * np.sin(2 * np.pi * (hours - 8) / 24) + np.where(weekday >= 5, -5, 0)
    value = level + rng.normal(0, 1.5, len(t))
    kept = rng.random(len(t)) > 0.01
    jitter = pd.to_timedelta(rng.integers(0, 20, len(t)), unit="s")
    frame = pd.DataFrame({"timestamp": (t + jitter)[kept], "value": value[kept].round(3)})
    frame.to_csv(path, index=False)


@click.command()
@click.option("--devices", default=3, show_default=True)
@click.option("--days", default=30, show_default=True, help="Days of data: the first is history, the rest scored.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None)
def main(devices: int, days: int, json_path: Path | None) -> None:
    with tempfile.TemporaryDirectory(prefix="iot-lake-longwindow-") as tmp:
        work = Path(tmp)
        (work / "home").mkdir()
        env = clean_env(IOT_LAKE_ROOT=str(work / "lake"), DAGSTER_HOME=str(work / "home"))
        reports = {}
        for i in range(devices):
            path = work / f"line-{i + 1}.csv"
            write_series(path, days, seed=i)
            reports[path.name] = import_series(path, f"line-{i + 1}", "power", "kW", START, env, site="plant-1")
        with console.status(f"python -m jobs.main --no-simulate over {days} days of {devices} devices"):
            done, pipeline_s = run_pipeline(reports, env)
        console.print(done.stdout[-4000:])
        failed = _failed_runs(done.stdout + done.stderr)
        if done.returncode or failed:
            raise SystemExit(f"the main job failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        hours, duck = duck_reference(work)
    console.print(
        f"{days} days x {devices} devices: the main job took {pipeline_s:.0f} s, the DuckDB reference "
        f"{duck.wall:.1f} s over {len(hours)} hours; load average {load_average():.1f} on {os.cpu_count()} cores"
    )
    write(
        json_path,
        [
            Result(
                "longwindow",
                f"python -m jobs.main --no-simulate, {days} days of 5-minute data x {devices} devices",
                pipeline_s,
                target=TARGET_S if days >= 30 else None,
                target_on="value",
                reference=f"DuckDB curated path over the same {len(hours)} hours",
                reference_value=duck.wall,
                note=f"{days - 1} nightly trainings and forecast ranges",
            )
        ],
    )


if __name__ == "__main__":
    main()
