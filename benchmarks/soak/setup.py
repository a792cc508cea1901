"""Child process of benchmarks.soak, run inside the project copy: the day before the soak curated, a
seasonal-naive champion, and the forecasts made at the start of each soak hour.

    python -m benchmarks.soak.setup --lake DIR --devices N --seed S --start ISO --hours H

The soak delivers the hours [start, start + H) afterwards (and the next, if its end falls there), so
the forecasts of those hours exist before their data: the deviations (and cases) follow the
telemetry as under production. The landing objects of the setup are removed, as in
benchmarks/latency/setup.py, so the fresh `dagster dev` sees only what the soak delivers, and every
landing line left at the end is one the soak delivered.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import datetime, timedelta
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lake", required=True)
    parser.add_argument("--devices", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--start", required=True, help="the first soak hour (UTC, ISO)")
    parser.add_argument("--hours", type=int, required=True)
    args = parser.parse_args()
    os.environ["IOT_LAKE_ROOT"] = args.lake

    from dagster import DagsterInstance, materialize

    from assets.ml.forecast import batch_forecast
    from benchmarks.lake_setup import (
        PARTITION,
        RANGE_END,
        RANGE_START,
        clear_landing,
        curate_hours,
        register_naive_champion,
    )
    from benchmarks.soak.run import sim_config
    from iot_lake.lake import Lake
    from iot_lake.settings import load_settings
    from iot_lake.simulate.runner import Simulator
    from iot_lake.sources.historian import create_engine, land_registry
    from resources.environment import build_resources

    lake = Lake(args.lake)
    first = datetime.fromisoformat(args.start)
    day_before = (first - timedelta(days=1)).replace(hour=0)
    sim = Simulator(sim_config(args.devices, args.seed), lake)
    url = f"sqlite:///{Path(args.lake).parent}/historian.sqlite"
    sim.seed_historian(url, day_before.date())
    engine = create_engine(url)
    for day in sorted({day_before.date(), first.date(), (first + timedelta(hours=args.hours)).date()}):
        land_registry(lake, engine, day)
    engine.dispose()
    sim.backfill(day_before, first)

    with DagsterInstance.get() as instance:
        curate_hours(instance, day_before, first - timedelta(hours=1))
        register_naive_champion(lake, "soak-naive", day_before, first)
        # The forecast made at the start of each soak hour is batch_forecast's partition of the hour
        # before: one run over the range, one hour more in case the clock passes into the next hour
        # before the soak ends (the automation scores that hour then).
        materialize(
            [batch_forecast],
            tags={
                RANGE_START: (first - timedelta(hours=1)).strftime(PARTITION),
                RANGE_END: (first + timedelta(hours=args.hours - 1)).strftime(PARTITION),
            },
            instance=instance,
            resources=build_resources(load_settings()),
            raise_on_error=True,
        )
    clear_landing(lake)
    print(json.dumps({"start": first.isoformat()}))


if __name__ == "__main__":
    main()
