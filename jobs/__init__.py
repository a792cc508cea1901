"""Jobs and schedules over the assets."""

from datetime import UTC, timedelta

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

from assets.warehouse.dbt import WAREHOUSE_DAILY_SELECTION, WAREHOUSE_HOURLY_SELECTION, WAREHOUSE_MODELS_SELECTION
from iot_lake.settings import load_settings
from jobs.maintenance import delta_maintenance_job, delta_maintenance_schedule
from resources.failures import RETRY_POLICY

telemetry_hourly_job = define_asset_job(
    "telemetry_hourly_job",
    selection=AssetSelection.assets(
        ["landing", "telemetry"], ["curated", "telemetry"], ["curated", "telemetry_1min"], ["curated", "telemetry_5min"]
    ),
    description="One arrival hour of telemetry: inventory the landing objects, curate them, refresh the aggregates.",
    op_retry_policy=RETRY_POLICY,
)
weather_daily_job = define_asset_job(
    "weather_daily_job",
    selection=AssetSelection.assets(["landing", "weather"], ["curated", "weather"]),
    description="Validate one day of third-party weather files and curate their rows.",
    op_retry_policy=RETRY_POLICY,
)
features_daily_job = define_asset_job(
    "features_daily_job",
    selection=AssetSelection.assets(["curated", "features"]),
    description="Build one day of the forecasting feature table.",
    op_retry_policy=RETRY_POLICY,
)
historian_extract_job = define_asset_job(
    "historian_extract_job",
    selection=AssetSelection.assets(["landing", "device_registry"], ["landing", "historical_readings"]),
    description="Snapshot the device registry and extract new historical readings for one day.",
    op_retry_policy=RETRY_POLICY,
)
historian_extract_schedule = build_schedule_from_partitioned_job(
    historian_extract_job,
    hour_of_day=0,
    minute_of_hour=30,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Nightly extract of the previous day's registry snapshot and new readings (00:30 UTC).",
)

features_daily_schedule = build_schedule_from_partitioned_job(
    features_daily_job,
    hour_of_day=1,
    minute_of_hour=15,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Features of the previous day once its last landing hour and the registry snapshot are in (01:15 UTC).",
)

forecast_training_job = define_asset_job(
    "forecast_training_job",
    selection=AssetSelection.assets(["ml", "forecast_training_data"], ["ml", "forecast_model"]),
    description=(
        "Snapshot the training window ending with the day, train a challenger, promote it if it beats the champion."
    ),
    op_retry_policy=RETRY_POLICY,
)
forecast_training_schedule = build_schedule_from_partitioned_job(
    forecast_training_job,
    hour_of_day=2,
    minute_of_hour=0,
    default_status=DefaultScheduleStatus.RUNNING,
    description=(
        "Nightly retraining on the rolling window ending with the previous day (02:00 UTC, after its features)."
    ),
)
forecast_refresh_job = define_asset_job(
    "forecast_refresh_job",
    selection=AssetSelection.assets(["ml", "batch_forecast"]),
    description="Forecast the next 24 hours from the end of the hour with the champion model.",
    op_retry_policy=RETRY_POLICY,
)


def _hour_that_ended(context: ScheduleEvaluationContext) -> RunRequest:
    # Hourly partitions end with the hour in progress (the sensor needs it); an hourly schedule
    # runs the hour that has ended.
    hour = context.scheduled_execution_time.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    key = (hour - timedelta(hours=1)).strftime("%Y-%m-%d-%H:%M")
    return RunRequest(run_key=key, partition_key=key)


@schedule(
    job=forecast_refresh_job,
    cron_schedule="20 * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly forecasts with the champion from the end of the hour that just ended, 20 minutes past "
    "the hour (after its curated telemetry).",
)
def forecast_refresh_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    return _hour_that_ended(context)


warehouse_job = define_asset_job(
    "warehouse_job",
    selection=WAREHOUSE_MODELS_SELECTION,
    description="The warehouse's staging views, device snapshot, dimensions and case facts (dbt, unpartitioned).",
    op_retry_policy=RETRY_POLICY,
)
warehouse_hourly_job = define_asset_job(
    "warehouse_hourly_job",
    selection=WAREHOUSE_HOURLY_SELECTION,
    description="The incremental hourly warehouse facts of an hour's window (dbt): telemetry, forecasts, deviations.",
    op_retry_policy=RETRY_POLICY,
)
warehouse_daily_job = define_asset_job(
    "warehouse_daily_job",
    selection=WAREHOUSE_DAILY_SELECTION,
    description="The daily device-health mart (dbt) of one day.",
    op_retry_policy=RETRY_POLICY,
)
# One run at a time per DuckDB file locally, so the three never overlap: the models at :10, the
# hour that ended at :40 (after its forecast at :20 and deviations), the day at 01:50. Running by
# default in prod only: under `dagster dev` on a laptop they would take the cores from the landing ->
# case path every hour; start them in the UI (or run the jobs) when the local warehouse should follow.
WAREHOUSE_SCHEDULE_STATUS = DefaultScheduleStatus.RUNNING if load_settings().is_prod else DefaultScheduleStatus.STOPPED
warehouse_schedule = ScheduleDefinition(
    job=warehouse_job,
    cron_schedule="10 * * * *",
    execution_timezone="UTC",
    default_status=WAREHOUSE_SCHEDULE_STATUS,
    description="Staging, the device snapshot, dimensions and cases, hourly at :10.",
)


@schedule(
    job=warehouse_hourly_job,
    cron_schedule="40 * * * *",
    execution_timezone="UTC",
    default_status=WAREHOUSE_SCHEDULE_STATUS,
    description="The hourly facts of the hour that ended, 40 minutes past the hour.",
)
def warehouse_hourly_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    return _hour_that_ended(context)


warehouse_daily_schedule = build_schedule_from_partitioned_job(
    warehouse_daily_job,
    hour_of_day=1,
    minute_of_hour=50,
    default_status=WAREHOUSE_SCHEDULE_STATUS,
    description="Device health of the previous day (01:50 UTC, after its last hourly facts).",
)

all_jobs = [
    telemetry_hourly_job,
    weather_daily_job,
    features_daily_job,
    historian_extract_job,
    delta_maintenance_job,
    forecast_training_job,
    forecast_refresh_job,
    warehouse_job,
    warehouse_hourly_job,
    warehouse_daily_job,
]
all_schedules = [
    historian_extract_schedule,
    features_daily_schedule,
    delta_maintenance_schedule,
    forecast_training_schedule,
    forecast_refresh_schedule,
    warehouse_schedule,
    warehouse_hourly_schedule,
    warehouse_daily_schedule,
]
