"""ops/check_results: every asset check evaluation of the ended runs, copied from Dagster's instance
into the lake (iot_lake/check_results.py), for the warehouse and the data quality dashboard.

The checks are the landing checks, row accounting and the Great Expectations suites, and the dbt
tests (dagster-dbt reports each as an asset check of the model it tests): one reader of the
instance covers them all, with no change where a check is defined. The warehouse job materializes
it before its dbt models, so the warehouse sees the checks of every run that ended before; the dbt
tests of a warehouse run are copied by the next one (the instance has them only once it ended).
"""

from datetime import UTC, datetime

from dagster import (
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetKey,
    DagsterInstance,
    MaterializeResult,
    MetadataValue,
    asset,
)

from iot_lake.check_results import CHECK_RESULTS_KEY, row, summary, write_check_results
from lib.check_evaluations import EndedRunsCursor, ended_runs, evaluations_of_run, plain, run_partition
from lib.pools import LAKE_WRITES
from resources.lake import LakeResource

CHECK_RESULTS_ASSET_KEY = AssetKey(CHECK_RESULTS_KEY.split("/"))
# The assets whose checks it copies, for the lineage (the warehouse models' dbt tests too, but they
# are downstream of it: their results arrive with the next warehouse_job run).
CHECKED = [
    AssetKey(["landing", "telemetry"]),
    AssetKey(["landing", "weather"]),
    AssetKey(["landing", "device_registry"]),
    AssetKey(["curated", "telemetry"]),
    AssetKey(["curated", "telemetry_1min"]),
    AssetKey(["curated", "telemetry_5min"]),
    AssetKey(["curated", "weather"]),
    AssetKey(["curated", "features"]),
]
CURSOR = "cursor"  # the materialization's metadata entry the next one starts from


def previous_cursor(instance: DagsterInstance) -> EndedRunsCursor:
    """Where the last materialization stopped; the beginning of the instance's history the first time."""
    event = instance.get_latest_materialization_event(CHECK_RESULTS_ASSET_KEY)
    entry = event.asset_materialization.metadata.get(CURSOR) if event and event.asset_materialization else None
    return EndedRunsCursor.parse(entry.value if entry is not None else None) or EndedRunsCursor({})


def check_result_rows(instance: DagsterInstance, cursor: EndedRunsCursor) -> tuple[list[dict], int]:
    """The rows of the evaluations of the runs ended after the cursor (which moves past them), and how
    many runs those were."""
    rows, runs = [], 0
    for run in ended_runs(instance, cursor):
        runs += 1
        for found in evaluations_of_run(instance, run.run_id):
            evaluation, entry = found.evaluation, found.record.event_log_entry
            severity = evaluation.severity or AssetCheckSeverity.ERROR
            metadata = {k: plain(v) for k, v in evaluation.metadata.items()}
            rows.append(
                row(
                    run_id=run.run_id,
                    event_id=found.record.storage_id,
                    job=run.job_name,
                    asset_key=evaluation.asset_key.to_user_string(),
                    check_name=evaluation.check_name,
                    passed=evaluation.passed,
                    severity=severity.value,
                    description=evaluation.description or summary(metadata) or None,
                    partition_key=evaluation.partition or run_partition(run),
                    evaluated_at=_utc(entry.timestamp),
                )
            )
    return rows, runs


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


@asset(
    key=CHECK_RESULTS_ASSET_KEY,
    deps=CHECKED,
    pool=LAKE_WRITES,  # commits to a lake Delta table (lib/pools.py)
    group_name="ops",
    owners=["team:ml-platform"],  # the ops layer's owners (tests/test_definitions.py)
    kinds={"delta", "python"},
    description=(
        "Every asset check evaluation of the runs that ended since the last materialization (landing "
        "checks, row accounting, Great Expectations suites, dbt tests): asset, check, passed, severity, "
        "a short summary, run, partition and time, copied from Dagster's instance into the lake "
        "(ops/check_results, Delta, upserted by run and event) for the data quality dashboard."
    ),
)
def check_results(context: AssetExecutionContext, lake: LakeResource) -> MaterializeResult:
    cursor = previous_cursor(context.instance)
    rows, runs = check_result_rows(context.instance, cursor)
    written = write_check_results(lake.lake(), rows, lake.delta_storage_options())
    failed = sum(1 for r in rows if not r["passed"])
    context.log.info(f"{written} check evaluations of {runs} ended runs copied to the lake, {failed} failed")
    return MaterializeResult(
        metadata={
            CURSOR: MetadataValue.text(str(cursor)),
            "runs": MetadataValue.int(runs),
            "evaluations": MetadataValue.int(written),
            "failed": MetadataValue.int(failed),
            "table": MetadataValue.path(lake.lake().uri(CHECK_RESULTS_KEY)),
        }
    )
