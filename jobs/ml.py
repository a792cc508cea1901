"""ML: nightly training of the forecast model and the hourly batch forecasts."""

from dagster import (
    AssetSelection,
    DefaultScheduleStatus,
    RunRequest,
    ScheduleEvaluationContext,
    build_schedule_from_partitioned_job,
    define_asset_job,
    schedule,
)

from assets.ml.forecast import BATCH_FORECAST_KEY, MODEL_KEY, TRAINING_DATA_KEY
from lib.retries import RETRY_POLICY
from lib.schedules import hour_that_ended

forecast_training_job = define_asset_job(
    "forecast_training_job",
    selection=AssetSelection.assets(TRAINING_DATA_KEY, MODEL_KEY),
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
    selection=AssetSelection.assets(BATCH_FORECAST_KEY),
    description="Forecast the next 24 hours from the end of the hour with the champion model.",
    op_retry_policy=RETRY_POLICY,
)


@schedule(
    job=forecast_refresh_job,
    cron_schedule="20 * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly forecasts with the champion from the end of the hour that just ended, 20 minutes past "
    "the hour (after its curated telemetry).",
)
def forecast_refresh_schedule(context: ScheduleEvaluationContext) -> RunRequest:
    return hour_that_ended(context)
