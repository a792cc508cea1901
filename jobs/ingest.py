"""Ingest: the landing assets of the three sources and, for telemetry and weather, their curated tables.

The landing sensor (sensors/landing.py) runs the telemetry and weather jobs as objects land; the
historian extract runs nightly.
"""

from dagster import AssetSelection, DefaultScheduleStatus, build_schedule_from_partitioned_job, define_asset_job

from assets.curated.daily import CURATED_WEATHER_KEY
from assets.curated.history import CURATED_HISTORY_KEY
from assets.curated.telemetry import AGGREGATE_KEYS, CURATED_TELEMETRY_KEY, DEVICE_STATE_KEY
from assets.landing.historian import DEVICE_REGISTRY_KEY, HISTORICAL_READINGS_KEY
from assets.landing.telemetry import LANDING_TELEMETRY_KEY
from assets.landing.weather import LANDING_WEATHER_KEY
from lib.retries import RETRY_POLICY

telemetry_hourly_job = define_asset_job(
    "telemetry_hourly_job",
    selection=AssetSelection.assets(
        LANDING_TELEMETRY_KEY, CURATED_TELEMETRY_KEY, *AGGREGATE_KEYS.values(), DEVICE_STATE_KEY
    ),
    description=(
        "One arrival hour of telemetry: inventory the landing objects, curate them, refresh the aggregates "
        "and the hot state."
    ),
    op_retry_policy=RETRY_POLICY,
)
weather_daily_job = define_asset_job(
    "weather_daily_job",
    selection=AssetSelection.assets(LANDING_WEATHER_KEY, CURATED_WEATHER_KEY),
    description="Validate one day of third-party weather files and curate their rows.",
    op_retry_policy=RETRY_POLICY,
)
historian_extract_job = define_asset_job(
    "historian_extract_job",
    selection=AssetSelection.assets(DEVICE_REGISTRY_KEY, HISTORICAL_READINGS_KEY),
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
historian_curated_job = define_asset_job(
    "historian_curated_job",
    selection=AssetSelection.assets(CURATED_HISTORY_KEY),
    description=(
        "Curate the readings one historian extract day landed into curated telemetry and refresh their "
        "1- and 5-minute aggregates (a range of days is one run)."
    ),
    op_retry_policy=RETRY_POLICY,
)
historian_curated_schedule = build_schedule_from_partitioned_job(
    historian_curated_job,
    hour_of_day=0,
    minute_of_hour=50,
    default_status=DefaultScheduleStatus.RUNNING,
    description="The previous day's extract curated after the extract, before the features (00:50 UTC).",
)
