"""Child process of benchmarks.growth: build a lake, prime it with one hour, or measure the next.

    python -m benchmarks.growth.lake template --lake DIR --devices N --seed S
    python -m benchmarks.growth.lake prime --lake DIR
    python -m benchmarks.growth.lake settle --lake DIR
    python -m benchmarks.growth.lake measure --lake DIR
    python -m benchmarks.growth.lake midnight --lake DIR

The lake and a temporary DAGSTER_HOME come from the environment the parent sets (IOT_LAKE_ROOT,
DAGSTER_HOME). Every step runs the project's own jobs through Dagster, as ``python -m jobs.main``
does; ``measure`` prints one JSON object, the wall seconds of each part.

- ``template``: the simulator lands a day and two hours (``PREVIOUS`` and ``MEASURED``), the day is
  curated, a seasonal-naive champion is registered on it and forecasts the two hours. Only the
  forecasts, the registry and the landing objects are kept (``keep``): the measured lakes are
  copies of it that hold no curated row yet.
- ``prime``: ``PREVIOUS`` through the main job's path (landing inventory and curated telemetry with
  its aggregates, deviations, warehouse and its hourly facts): the tables exist and hold one hour.
- ``settle``: ``PREVIOUS``'s deviations again, once the lake holds its history: as in a running
  deployment, the hour before the measured one was scored over the history, and kept the series'
  scorer states for the next hour (iot_lake.detect.states).
- ``measure``: ``MEASURED`` through the same path, each part timed on its own.
- ``midnight``: the deviations of the first hour of ``MEASURED``'s day, where the replay's start
  moves and no states are kept: every series replays its stored rows (last, since it rewrites an
  hour before the measured one).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
EVENT_DAY = date(2026, 11, 21)
# Midday, so an hour's late records (up to 6 h) stay in its event date: the history's copies of it
# keep their rows' dates consistent (benchmarks/growth/history.py).
PREVIOUS = datetime(2026, 11, 21, 12, tzinfo=UTC)
MEASURED = PREVIOUS + timedelta(hours=1)
SAMPLE_S = 10
DUPLICATE_RATE = 0.02
# What the measured lakes keep of the template: the inputs of the measured path that are not its output.
KEEP = ("landing", "forecasts", "models", "_sources", "_registry")


def _key(job, hour: datetime) -> str:
    """The job's partition holding ``hour`` (an hour, or its day for the day-partitioned hourly facts)."""
    return hour.strftime(job.partitions_def.fmt)


def template(lake_dir: Path, devices: int, seed: int) -> None:
    from dagster import DagsterInstance

    from benchmarks.curate.data import _land_registry
    from benchmarks.lake_setup import curate_hours, register_naive_champion
    from iot_lake.lake import Lake
    from iot_lake.simulate.deliveries import SimConfig
    from iot_lake.simulate.runner import Simulator

    lake = Lake(str(lake_dir))
    start = PREVIOUS - timedelta(days=1)
    cfg = SimConfig(devices=devices, seed=seed, interval_s=SAMPLE_S, duplicate_rate=DUPLICATE_RATE, history_days=0)
    sim = Simulator(cfg, lake)
    sim.backfill(start, MEASURED + timedelta(hours=1))
    for day in sorted({start.date(), MEASURED.date()}):
        _land_registry(sim, lake, day)
    with DagsterInstance.get() as instance:
        curate_hours(instance, start, PREVIOUS - timedelta(hours=1))
        register_naive_champion(lake, "growth-naive", start, PREVIOUS)
        # The forecast made at the start of an hour is batch_forecast's partition of the hour before.
        _run(instance, "forecast_refresh_job", PREVIOUS - timedelta(hours=1), PREVIOUS)


def _job(name: str):
    from definitions import defs

    return defs().resolve_job_def(name)


def _run(instance, job, first: datetime | None, last: datetime | None = None) -> float:
    """One run of a job (or of a job subset), over the partitions holding one hour or a range; its
    wall seconds."""
    job = _job(job) if isinstance(job, str) else job
    key, tags = None, {}
    if first is not None and last is not None and _key(job, last) != _key(job, first):
        tags = {RANGE_START: _key(job, first), RANGE_END: _key(job, last)}
    elif first is not None:
        key = _key(job, first)
    t0 = time.perf_counter()
    job.execute_in_process(partition_key=key, tags=tags, instance=instance, run_config=QUIET, raise_on_error=True)
    return time.perf_counter() - t0


def keep_inputs(template_dir: Path, lake_dir: Path) -> None:
    """A measured lake: the template's inputs only (no curated, ops or warehouse table)."""
    shutil.rmtree(lake_dir, ignore_errors=True)
    lake_dir.mkdir(parents=True)
    for name in os.listdir(template_dir):
        if name in KEEP:
            shutil.copytree(template_dir / name, lake_dir / name)
    # The landing inventory is a table of the measured path: it starts empty too.
    shutil.rmtree(lake_dir / "landing" / "_inventory", ignore_errors=True)


def hour_path(instance, hour: datetime) -> dict[str, float]:
    """One hour through the main job's path, each part timed: what ``python -m jobs.main`` runs for it."""
    from benchmarks.curate.ours import subsets

    parts = subsets(_job("telemetry_hourly_job"))
    return {
        "landing": _run(instance, parts["landing"], hour),
        "curated": _run(instance, parts["curated"], hour),
        "deviations": _run(instance, "deviations_job", hour),
        "warehouse": _run(instance, "warehouse_job", None),
        # The hourly facts' partitions are days: the hour's run rebuilds its day (as the schedule's does).
        "warehouse_hourly": _run(instance, "warehouse_hourly_job", hour),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=["template", "prime", "settle", "measure", "midnight"])
    parser.add_argument("--lake", required=True, type=Path)
    parser.add_argument("--devices", type=int, default=3)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()
    os.environ["IOT_LAKE_ROOT"] = str(args.lake)
    if args.step == "template":
        template(args.lake, args.devices, args.seed)
        print(json.dumps({}))
        return

    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        if args.step == "settle":
            print(json.dumps({"deviations": _run(instance, "deviations_job", PREVIOUS)}))
        elif args.step == "midnight":
            midnight = MEASURED.replace(hour=0)
            print(json.dumps({"deviations": _run(instance, "deviations_job", midnight)}))
        else:
            print(json.dumps(hour_path(instance, PREVIOUS if args.step == "prime" else MEASURED)))


if __name__ == "__main__":
    main()
