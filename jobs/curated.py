"""Curated: the daily forecasting feature table (telemetry and weather are curated as they land, jobs/ingest.py)."""

from dagster import AssetSelection, DefaultScheduleStatus, build_schedule_from_partitioned_job, define_asset_job

from assets.curated.daily import CURATED_FEATURES_KEY
from lib.retries import RETRY_POLICY

features_daily_job = define_asset_job(
    "features_daily_job",
    selection=AssetSelection.assets(CURATED_FEATURES_KEY),
    description="Build one day of the forecasting feature table.",
    op_retry_policy=RETRY_POLICY,
)
features_daily_schedule = build_schedule_from_partitioned_job(
    features_daily_job,
    hour_of_day=1,
    minute_of_hour=15,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Features of the previous day once its last landing hour and the registry snapshot are in (01:15 UTC).",
)
