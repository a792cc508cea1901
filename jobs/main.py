"""The main job, end to end on whatever IOT_LAKE_ENV selects (the embedded default out of the box):
simulate the sources, then materialize every asset for the partitions the new data touches.

    python -m jobs.main [--days 1] [--devices 50] [--seed 42] [--start YYYY-MM-DD]

Runs are recorded in the same Dagster instance `dagster dev` uses (.dagster/ in the repo, or
$DAGSTER_HOME), so they show up in the UI afterwards.
"""

from __future__ import annotations

import os
import sys
import time
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
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


def partitions_to_run(lake: Lake, start: datetime, end: datetime) -> dict[str, list[str]]:
    """Partition keys per job for everything that landed for the simulated window."""
    hours = sorted({h for o in lake.list(TELEMETRY_PREFIX) if (h := telemetry_hour_of_key(o.key)) and start <= h < end})
    weather_days = sorted({d for o in lake.list(WEATHER_PREFIX) if (d := weather_day_of_key(o.key)) and start.date() <= d < end.date()})
    days = sorted({start.date() + timedelta(days=i) for i in range((end - start).days or 1)})
    return {
        "historian_extract_job": [d.isoformat() for d in days],
        "telemetry_hourly_job": [h.strftime("%Y-%m-%d-%H:%M") for h in hours],
        "weather_daily_job": [d.isoformat() for d in weather_days],
        "features_daily_job": [d.isoformat() for d in days],
    }


def run_jobs(defs, instance, plan: dict[str, list[str]]) -> list[tuple[str, str, str]]:
    failures = []
    total = sum(len(v) for v in plan.values())
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("materializing", total=total)
        for job_name, keys in plan.items():
            job = defs.resolve_job_def(job_name)
            for key in keys:
                progress.update(task, description=f"{job_name} {key}")
                result = job.execute_in_process(partition_key=key, instance=instance, raise_on_error=False, run_config=QUIET)
                if not result.success:
                    failures.append((job_name, key, result.run_id))
                progress.advance(task)
    return failures


@click.command()
@click.option("--days", default=1, show_default=True, help="Days of telemetry to simulate.")
@click.option("--devices", default=50, show_default=True)
@click.option("--seed", default=42, show_default=True)
@click.option("--start", "start_day", default=None, help="First UTC day; default: the last full day before today.")
def main(days: int, devices: int, seed: int, start_day: str | None) -> None:
    from definitions import defs, settings

    t0 = time.perf_counter()
    first = date.fromisoformat(start_day) if start_day else datetime.now(timezone.utc).date() - timedelta(days=days)
    start = datetime.combine(first, datetime.min.time(), tzinfo=timezone.utc)
    end = start + timedelta(days=days)
    lake = Lake(settings.lake_root)
    lake.ensure_layout()
    console.print(f"[bold]iot-lake main job[/] env={settings.env} lake={settings.lake_root} window={start:%Y-%m-%d}..{end:%Y-%m-%d}")

    sim = Simulator(SimConfig(devices=devices, seed=seed), lake)
    if not settings.is_prod:  # in prod the historian is a real database, not ours to seed
        sim.seed_historian(settings.historian_url, start.date())
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console) as p:
        task = p.add_task(f"simulating {devices} devices", total=days * 24)
        report = sim.backfill(start, end, on_hour=lambda _: p.advance(task))
    t_sim = time.perf_counter() - t0

    plan = partitions_to_run(lake, start, end)
    with repo_instance() as instance:
        failures = run_jobs(defs, instance, plan)
    elapsed = time.perf_counter() - t0

    table = Table(title="main job")
    table.add_column("step")
    table.add_column("result", justify="right")
    table.add_row("simulated objects / lines", f"{report.objects:,} / {report.lines:,}")
    table.add_row("weather files / anomalies", f"{report.weather_files} / {report.anomalies}")
    for job_name, keys in plan.items():
        table.add_row(job_name, f"{len(keys)} partition(s)")
    table.add_row("failed runs", str(len(failures)))
    table.add_row("simulate / total seconds", f"{t_sim:.1f} / {elapsed:.1f}")
    Console().print(table)
    for job_name, key, run_id in failures:
        console.print(f"[red]FAILED[/] {job_name} {key} run {run_id}")
    if failures or not plan["telemetry_hourly_job"]:
        sys.exit(1)


if __name__ == "__main__":
    main()
