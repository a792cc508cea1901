"""Child process of benchmarks.latency, run inside the project copy: yesterday and today so far
curated, a seasonal-naive champion, and the forecasts made at the start of the current hour and of
the next one (the benchmark measures in the next hour when too little of this one is left for it:
benchmarks/hours.py).

    python -m benchmarks.latency.setup --lake DIR --devices N

Afterwards the landing objects (telemetry and weather) are removed, keeping their inventories and
everything curated from them: the landing sensor's first tick in the fresh `dagster dev` must see
only what the benchmark writes next, not a day of objects it would run again.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lake", required=True)
    parser.add_argument("--devices", type=int, default=5)
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
    from iot_lake.lake import Lake
    from iot_lake.settings import load_settings
    from iot_lake.simulate.deliveries import SimConfig
    from iot_lake.simulate.runner import Simulator
    from iot_lake.sources.historian import create_engine, land_registry
    from resources.environment import build_resources

    lake = Lake(args.lake)
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = (hour - timedelta(days=1)).replace(hour=0)
    sim = Simulator(SimConfig(devices=args.devices, seed=7, history_days=1), lake)
    url = f"sqlite:///{Path(args.lake).parent}/historian.sqlite"
    sim.seed_historian(url, start.date())
    engine = create_engine(url)
    land_registry(lake, engine, start.date())
    engine.dispose()
    sim.backfill(start, hour)

    with DagsterInstance.get() as instance:
        result = curate_hours(instance, start, hour - timedelta(hours=1))
        register_naive_champion(lake, "latency-naive", start, hour)
        # The forecast made at the start of an hour is batch_forecast's partition of the hour before:
        # this hour's and the next's, as one run.
        materialize(
            [batch_forecast],
            tags={RANGE_START: (hour - timedelta(hours=1)).strftime(PARTITION), RANGE_END: hour.strftime(PARTITION)},
            instance=instance,
            run_config=None,
            resources=build_resources(load_settings()),
            raise_on_error=True,
        )
    clear_landing(lake)
    print(json.dumps({"hour": hour.isoformat(), "setup_run": result.run_id}))


if __name__ == "__main__":
    main()
