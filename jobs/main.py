"""The main job, end to end on whatever IOT_LAKE_ENV selects (the embedded default out of the box):
simulate the sources, then materialize every asset for the partitions the new data touches.

    python -m jobs.main [--days 1] [--devices 50] [--seed 42] [--start YYYY-MM-DD]

Runs are recorded in the same Dagster instance `dagster dev` uses (.dagster/ in the repo, or
$DAGSTER_HOME), so they show up in the UI afterwards.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import time
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import click
from dagster import DagsterInstance
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from iot_lake.lake import TELEMETRY_PREFIX, WEATHER_PREFIX, Lake, telemetry_hour_of_key, weather_day_of_key
from iot_lake.simulate.deliveries import SimConfig
from iot_lake.simulate.runner import Simulator

REPO = Path(__file__).resolve().parent.parent
console = Console(stderr=True)
# The UI keeps every event; the terminal only needs warnings and the progress bar.
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
# The run tags a backfill of a partition range carries (what the UI's "single run" backfill sets).
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@contextmanager
def repo_instance():
    """$DAGSTER_HOME if set, else the repo's .dagster/ configured by the repo's dagster.yaml."""
    if os.environ.get("DAGSTER_HOME"):
        with DagsterInstance.get() as instance:
            yield instance
        return
    cwd = os.getcwd()
    os.chdir(REPO)  # dagster.yaml's storage paths are relative to the repo root
    try:
        (REPO / ".dagster").mkdir(exist_ok=True)
        with DagsterInstance.from_config(str(REPO)) as instance:
            yield instance
    finally:
        os.chdir(cwd)


def partitions_to_run(lake: Lake, start: datetime, end: datetime) -> dict[str, list[str | None]]:
    """Partition keys per job for everything that landed for the simulated window, in run order."""
    hours = sorted({h for o in lake.list(TELEMETRY_PREFIX) if (h := telemetry_hour_of_key(o.key)) and start <= h < end})
    weather_days = sorted(
        {d for o in lake.list(WEATHER_PREFIX) if (d := weather_day_of_key(o.key)) and start.date() <= d < end.date()}
    )
    days = sorted({start.date() + timedelta(days=i) for i in range((end - start).days or 1)})
    return {
        "historian_extract_job": [d.isoformat() for d in days],
        "telemetry_hourly_job": [h.strftime("%Y-%m-%d-%H:%M") for h in hours],
        "weather_daily_job": [d.isoformat() for d in weather_days],
        "features_daily_job": [d.isoformat() for d in days],
        # The warehouse last: its unpartitioned models (staging, dimensions) before the hourly facts
        # that test against them, and the daily mart over both.
        "warehouse_job": [None],
        "warehouse_hourly_job": [h.strftime("%Y-%m-%d-%H:%M") for h in hours],
        "warehouse_daily_job": [d.isoformat() for d in days],
    }


def runs(defs, plan: dict[str, list[str | None]]) -> list[tuple[str, str | None, dict[str, str]]]:
    """(job, partition key, run tags): one run per partition, or one run per range where the job's assets
    backfill a range in a single run (the hourly telemetry: one Spark session for the whole day)."""
    out = []
    for job_name, keys in plan.items():
        if not keys:
            continue
        job = defs.resolve_job_def(job_name)
        single_run = all(
            (node := defs.resolve_assets_def(key)).backfill_policy is not None
            and node.backfill_policy.max_partitions_per_run is None
            for key in job.asset_layer.executable_asset_keys
        )
        if single_run and len(keys) > 1:
            out.append((job_name, None, {RANGE_START: keys[0], RANGE_END: keys[-1]}))
        else:
            out.extend((job_name, key, {}) for key in keys)
    return out


def run_jobs(defs, instance, plan: dict[str, list[str | None]]) -> list[tuple[str, str, str]]:
    failures = []
    todo = runs(defs, plan)
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as progress:
        task = progress.add_task("materializing", total=len(todo))
        for job_name, key, tags in todo:
            label = key or (f"{tags[RANGE_START]}...{tags[RANGE_END]}" if tags else "(unpartitioned)")
            progress.update(task, description=f"{job_name} {label}")
            # dagster-dbt echoes dbt's log lines to stdout (compute logs, under dagster dev); the
            # run's events have them, the terminal keeps the progress bar.
            with contextlib.redirect_stdout(io.StringIO()):
                result = defs.resolve_job_def(job_name).execute_in_process(
                    partition_key=key, tags=tags, instance=instance, raise_on_error=False, run_config=QUIET
                )
            if not result.success:
                failures.append((job_name, label, result.run_id))
            progress.advance(task)
    return failures


@click.command()
@click.option("--days", default=1, show_default=True, help="Days of telemetry to simulate.")
@click.option("--devices", default=50, show_default=True)
@click.option("--seed", default=42, show_default=True)
@click.option("--start", "start_day", default=None, help="First UTC day; default: the last full day before today.")
def main(days: int, devices: int, seed: int, start_day: str | None) -> None:
    from definitions import defs
    from iot_lake.settings import load_settings

    settings = load_settings()
    t0 = time.perf_counter()
    first = date.fromisoformat(start_day) if start_day else datetime.now(UTC).date() - timedelta(days=days)
    start = datetime.combine(first, datetime.min.time(), tzinfo=UTC)
    end = start + timedelta(days=days)
    lake = Lake(settings.lake_root)
    lake.ensure_layout()
    console.print(
        f"[bold]iot-lake main job[/] env={settings.env} "
        f"lake={settings.lake_root} window={start:%Y-%m-%d}..{end:%Y-%m-%d}"
    )

    sim = Simulator(SimConfig(devices=devices, seed=seed), lake)
    if not settings.is_prod:  # in prod the historian is a real database, not ours to seed
        sim.seed_historian(settings.historian_url, start.date())
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console
    ) as p:
        task = p.add_task(f"simulating {devices} devices", total=days * 24)
        report = sim.backfill(start, end, on_hour=lambda _: p.advance(task))
    t_sim = time.perf_counter() - t0

    plan = partitions_to_run(lake, start, end)
    with repo_instance() as instance:
        failures = run_jobs(defs(), instance, plan)
    elapsed = time.perf_counter() - t0

    table = Table(title="main job")
    table.add_column("step")
    table.add_column("result", justify="right")
    table.add_row("simulated objects / lines", f"{report.objects:,} / {report.lines:,}")
    table.add_row("weather files / anomalies", f"{report.weather_files} / {report.anomalies}")
    for job_name, keys in plan.items():
        table.add_row(job_name, f"{len(keys)} partition(s)" if keys != [None] else "unpartitioned")
    table.add_row("failed runs", str(len(failures)))
    table.add_row("simulate / total seconds", f"{t_sim:.1f} / {elapsed:.1f}")
    Console().print(table)
    for job_name, key, run_id in failures:
        console.print(f"[red]FAILED[/] {job_name} {key} run {run_id}")
    if failures or not plan["telemetry_hourly_job"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
