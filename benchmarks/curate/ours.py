"""Child process: materialize telemetry_hourly_job through Dagster, as a user would, and time it.

    python -m benchmarks.curate.ours --lake DIR --run 2026-11-21-00:00 [--run START...END ...]

Each --run is one partition key or a START...END range (a single-run backfill, one Spark
session). The lake and a temporary DAGSTER_HOME come from the environment the parent sets
(IOT_LAKE_ROOT, DAGSTER_HOME). Prints one JSON object: per run, its wall seconds and the wall
seconds of each step.
"""

from __future__ import annotations

import argparse
import json
import time

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", action="append", required=True, dest="runs")
    args = parser.parse_args()

    from dagster import DagsterInstance

    from definitions import defs

    job = defs.resolve_job_def("telemetry_hourly_job")
    out = []
    with DagsterInstance.get() as instance:
        for spec in args.runs:
            start, _, end = spec.partition("...")
            key, tags = (None, {RANGE_START: start, RANGE_END: end}) if end else (start, {})
            t0 = time.perf_counter()
            result = job.execute_in_process(partition_key=key, tags=tags, instance=instance, run_config=QUIET,
                                            raise_on_error=True)
            seconds = time.perf_counter() - t0
            steps = {s.step_key: round(s.end_time - s.start_time, 2) for s in instance.get_run_step_stats(result.run_id)
                     if s.end_time and s.start_time}
            out.append({"run": spec, "seconds": seconds, "steps": steps})
    print(json.dumps(out))


if __name__ == "__main__":
    main()
