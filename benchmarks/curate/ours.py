"""Child process: materialize telemetry_hourly_job through Dagster, as a user would, and time it.

    python -m benchmarks.curate.ours --run 2026-11-21-00:00 [--run START...END ...]

Each --run is one partition key or a START...END range (a single-run backfill, one Spark
session). It is three Dagster runs of the job's subsets, timed apart so that the curated
materialization is measured on its own, as the DuckDB reference is:

- landing: the landing/telemetry inventory (and its objects_readable check);
- curated: curated/telemetry and its 1-/5-minute aggregates, the Pipes subprocess on Sail, with the
  row_accounting check the job reports;
- checks: the Great Expectations suites on those tables (which the reference does not have).

The lake and a temporary DAGSTER_HOME come from the environment the parent sets (IOT_LAKE_ROOT,
DAGSTER_HOME). Prints one JSON object: per run, the wall seconds of each part and of its steps.
"""

from __future__ import annotations

import argparse
import json
import time

RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
PARTS = ("landing", "curated", "checks")


def subsets(job) -> dict[str, object]:
    """The job's three parts as job subsets (assets and the checks that run with them)."""
    graph = job.asset_layer.asset_graph
    assets, checks = set(graph.executable_asset_keys), set(graph.asset_check_keys)
    landing = {k for k in assets if k.path[0] == "landing"}
    curated = assets - landing
    in_job = {c for c in checks if c.name != "gx_suite"}  # reported by the step that materializes
    return {
        "landing": job.get_subset(
            asset_selection=landing, asset_check_selection={c for c in in_job if c.asset_key in landing}
        ),
        "curated": job.get_subset(
            asset_selection=curated, asset_check_selection={c for c in in_job if c.asset_key in curated}
        ),
        "checks": job.get_subset(asset_selection=set(), asset_check_selection=checks - in_job),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--run", action="append", required=True, dest="runs")
    args = parser.parse_args()

    from dagster import DagsterInstance

    from definitions import defs

    parts = subsets(defs().resolve_job_def("telemetry_hourly_job"))
    out = []
    with DagsterInstance.get() as instance:
        for spec in args.runs:
            start, _, end = spec.partition("...")
            key, tags = (None, {RANGE_START: start, RANGE_END: end}) if end else (start, {})
            run = {"run": spec, "steps": {}}
            for part in PARTS:
                t0 = time.perf_counter()
                result = parts[part].execute_in_process(
                    partition_key=key, tags=tags, instance=instance, run_config=QUIET, raise_on_error=True
                )
                run[part] = time.perf_counter() - t0
                run["steps"].update(
                    {
                        s.step_key: round(s.end_time - s.start_time, 2)
                        for s in instance.get_run_step_stats(result.run_id)
                        if s.end_time and s.start_time
                    }
                )
            run["seconds"] = run["curated"]
            out.append(run)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
