"""The main job's time breakdown (benchmarks/demo/breakdown.py): data work against orchestration,
read from real runs' Dagster events in a temporary instance."""

# No `from __future__ import annotations`: Dagster checks the assets' context annotations as objects.
import sys
import time
from datetime import datetime

from dagster import (
    AssetExecutionContext,
    BackfillPolicy,
    DagsterEventType,
    DagsterInstance,
    HourlyPartitionsDefinition,
    MaterializeResult,
    PipesSubprocessClient,
    asset,
    materialize,
)

from benchmarks.demo.breakdown import (
    DBT,
    DBT_START,
    IN_PROCESS,
    LAUNCH,
    PROCESS,
    REPORT,
    REPORT_CLOSING,
    RUN_CREATE,
    SIMULATE,
    SPARK,
    Event,
    breakdown,
    step_split,
)
from benchmarks.demo.run import simulate_seconds

HOURS = HourlyPartitionsDefinition(start_date=datetime(2026, 12, 1))
# A job script in miniature: opens Pipes, works 0.6 s, reports a materialization.
SCRIPT = (
    "import time\n"
    "from dagster_pipes import open_dagster_pipes\n"
    "with open_dagster_pipes() as pipes:\n"
    "    time.sleep(0.6)\n"
    "    pipes.report_asset_materialization(metadata={'rows': 1})\n"
)


@asset(partitions_def=HOURS, backfill_policy=BackfillPolicy.single_run())
def scored(context: AssetExecutionContext) -> MaterializeResult:
    time.sleep(0.4)  # the in-process data plane at work
    return MaterializeResult(metadata={"hours": len(context.partition_keys)})


@asset
def spark_job(context: AssetExecutionContext):
    return PipesSubprocessClient().run(command=[sys.executable, "-c", SCRIPT], context=context).get_results()


def test_breakdown_splits_real_runs_into_data_work_and_orchestration(tmp_path):
    with DagsterInstance.local_temp(str(tmp_path)) as instance:
        started = time.time() - 2.0  # the main job's first 2 s: imports, 1.5 s simulating
        tags = {
            "dagster/asset_partition_range_start": "2026-12-01-00:00",
            "dagster/asset_partition_range_end": "2026-12-01-05:00",
        }
        assert materialize([scored], instance=instance, tags=tags).success
        assert materialize([spark_job], instance=instance).success
        ended = time.time() + 1.0  # and its closing table
        split = breakdown(instance, started, ended, simulate=1.5)

    s = split.seconds
    assert 0.4 <= s[IN_PROCESS] < 3 and 0.6 <= s[SPARK] < 4, s
    assert s[LAUNCH] > 0 and s[RUN_CREATE] > 0 and s[REPORT] > 0  # six hours' materializations reported
    assert s[SIMULATE] == 1.5 and s[PROCESS] >= 0.5 and s[REPORT_CLOSING] >= 1.0
    assert abs(sum(s.values()) - split.wall) < 0.01  # every second is in one category
    assert split.data == s[SIMULATE] + s[IN_PROCESS] + s[SPARK] + s[REPORT_CLOSING]
    assert 0 < split.overhead_share < 1 and set(split.per_job) == {"__ephemeral_asset_job__"}


def test_a_dbt_step_is_its_nodes_time_and_the_rest_start_up():
    # dbt streams each node's result as it finishes: 3 nodes of 1.5 s in a 10 s step, the last a
    # microbatch model of two partitions (its duration reported on both).
    done = DagsterEventType.ASSET_MATERIALIZATION
    events = [Event(100.0, "dbt", DagsterEventType.STEP_START)]
    events += [Event(100.0 + t, "dbt", done, dbt_seconds=1.5, node=n) for t, n in ((7, "a"), (8.5, "b"), (10, "c"))]
    events.append(Event(110.0, "dbt", done, dbt_seconds=1.5, node="c"))
    split = step_split("warehouse_models", events)
    assert split[DBT] == 4.5 and split[DBT_START] == 5.5 and not split.get(REPORT)


def test_simulate_seconds_come_from_the_closing_table():
    assert simulate_seconds("│ seconds │ simulate 12, total 250 (slowest: deviations_job 90) │") == 12.0
    assert simulate_seconds("no table") == 0.0


def test_the_closing_table_names_the_previous_champion_that_could_not_be_backtested_on_its_own_days():
    """From the second nightly training on, the champion trained the night before cannot be scored
    at the origins inside its own data: that is the nightly retraining working, not a fault."""
    from rich.console import Console

    from lib.loop_report import LoopSummary, closing_table

    why = "the model was fitted on data after the end of this history (at 2026-11-26T00:00:00)"
    champion = {"method": "lightgbm", "mase": 0.3, "naive_mase": 0.4, "coverage_80": 0.8, "coverage_95": 0.95}
    for skipped, expected in (
        ({"champion": why}, "previous champion not backtested on the days it was fitted on: " + why),
        ({"lightgbm": "too short"}, "lightgbm not backtested on every origin: too short"),
        ({"seasonal_naive_weekly": "no week"}, "seasonal_naive_weekly not trained: no week"),
    ):
        summary = LoopSummary(champion={**champion, "skipped": skipped})
        console = Console(width=400, record=True)
        console.print(closing_table(summary, None, [], [], {}, 0.0, 1.0))
        assert expected in console.export_text()
