"""Jobs and schedules over the assets."""

from dagster import AssetSelection, DefaultScheduleStatus, build_schedule_from_partitioned_job, define_asset_job

telemetry_hourly_job = define_asset_job(
    "telemetry_hourly_job",
    selection=AssetSelection.assets(
        ["landing", "telemetry"], ["curated", "telemetry"], ["curated", "telemetry_1min"], ["curated", "telemetry_5min"]
    ),
    description="One arrival hour of telemetry: inventory the landing objects, curate them, refresh the aggregates.",
)
landing_weather_job = define_asset_job(
    "landing_weather_job",
    selection=AssetSelection.assets(["landing", "weather"]),
    description="Validate one day of third-party weather files.",
)
historian_extract_job = define_asset_job(
    "historian_extract_job",
    selection=AssetSelection.assets(["landing", "device_registry"], ["landing", "historical_readings"]),
    description="Snapshot the device registry and extract new historical readings for one day.",
)
historian_extract_schedule = build_schedule_from_partitioned_job(
    historian_extract_job,
    hour_of_day=0,
    minute_of_hour=30,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Nightly extract of the previous day's registry snapshot and new readings (00:30 UTC).",
)

all_jobs = [telemetry_hourly_job, landing_weather_job, historian_extract_job]
all_schedules = [historian_extract_schedule]
