"""Warehouse: the dbt project's three runs, selected by what the dbt project declares (assets/warehouse/).

The dbt assets are the ``warehouse`` group; dbt's ``hourly`` and ``daily`` tags (Dagster tags with an
empty value) mark the incremental hourly facts and the daily mart, the rest (staging, the device
snapshot, dimensions, case facts) is unpartitioned. Selecting by group and tag keeps this module
independent of how the dbt assets are built.
"""

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleDefinition,
    ScheduleEvaluationContext,
    build_schedule_from_partitioned_job,
    define_asset_job,
    schedule,
)

from assets.ops.check_results import CHECK_RESULTS_ASSET_KEY
from assets.warehouse.dbt import WAREHOUSE_DAILY_SELECTION, WAREHOUSE_HOURLY_SELECTION, WAREHOUSE_MODELS_SELECTION
from iot_lake.settings import Settings
from lib.retries import RETRY_POLICY
from lib.schedules import day_of_hour_that_ended

warehouse_job = define_asset_job(
    "warehouse_job",
    # ops/check_results first (upstream of its dbt source): the checks of every run that ended before
    selection=WAREHOUSE_MODELS_SELECTION | AssetSelection.assets(CHECK_RESULTS_ASSET_KEY),
    description=(
        "The check results copied from Dagster's instance to the lake, then the warehouse's staging views, "
        "device snapshot, dimensions, case facts and check results (dbt, unpartitioned)."
    ),
    op_retry_policy=RETRY_POLICY,
)
warehouse_hourly_job = define_asset_job(
    "warehouse_hourly_job",
    selection=WAREHOUSE_HOURLY_SELECTION,
    description=(
        "The incremental hourly warehouse facts of a UTC day (dbt, one microbatch per day, rebuilt each hour "
        "as the day's hours arrive): telemetry, forecasts, deviations, row accounting."
    ),
    op_retry_policy=RETRY_POLICY,
)
warehouse_daily_job = define_asset_job(
    "warehouse_daily_job",
    selection=WAREHOUSE_DAILY_SELECTION,
    description="The daily device-health mart (dbt) of one day.",
    op_retry_policy=RETRY_POLICY,
)


def schedule_status(settings: Settings) -> DefaultScheduleStatus:
    """Running by default in prod only: under `dagster dev` on a laptop the warehouse runs would take the
    cores from the landing -> case path every hour; start them in the UI (or run the jobs) when the
    local warehouse should follow."""
    return DefaultScheduleStatus.RUNNING if settings.is_prod else DefaultScheduleStatus.STOPPED


def warehouse_schedules(settings: Settings) -> list[ScheduleDefinition]:
    """One run at a time per DuckDB file locally, so the three never overlap: the models at :10, the
    day of the hour that ended at :40 (after its forecast at :20 and deviations), the day at 01:50."""
    status = schedule_status(settings)
    warehouse_schedule = ScheduleDefinition(
        job=warehouse_job,
        cron_schedule="10 * * * *",
        execution_timezone="UTC",
        default_status=status,
        description="Staging, the device snapshot, dimensions and cases, hourly at :10.",
    )

    @schedule(
        job=warehouse_hourly_job,
        cron_schedule="40 * * * *",
        execution_timezone="UTC",
        default_status=status,
        description="The hourly facts of the day of the hour that ended (that day rebuilt), 40 minutes past the hour.",
    )
    def warehouse_hourly_schedule(context: ScheduleEvaluationContext) -> RunRequest:
        return day_of_hour_that_ended(context)

    warehouse_daily_schedule = build_schedule_from_partitioned_job(
        warehouse_daily_job,
        hour_of_day=1,
        minute_of_hour=50,
        default_status=status,
        description="Device health of the previous day (01:50 UTC, after its last hourly facts).",
    )
    return [warehouse_schedule, warehouse_hourly_schedule, warehouse_daily_schedule]
