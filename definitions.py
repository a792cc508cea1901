"""The single Dagster entry point: ``defs``. ``dagster dev`` in the repo root loads it."""

from dagster import Definitions, in_process_executor

from assets.curated import curated_assets, curated_checks
from assets.landing import landing_assets
from assets.ml import ml_assets
from assets.ops import ops_assets
from assets.warehouse import warehouse_assets
from iot_lake.settings import load_settings
from jobs import all_jobs, all_schedules
from resources import build_resources
from sensors.alerts import alert_sensors
from sensors.automation import ops_automation_sensor
from sensors.landing import landing_sensor

settings = load_settings()

defs = Definitions(
    assets=[*landing_assets, *curated_assets, *ml_assets, *ops_assets, *warehouse_assets()],
    asset_checks=curated_checks,
    jobs=all_jobs,
    schedules=all_schedules,
    sensors=[landing_sensor, ops_automation_sensor, *alert_sensors],
    resources=build_resources(settings),
    # Steps here only orchestrate: the heavy work runs in Spark and SageMaker (Pipes) or in one
    # Great Expectations validation. A process per step would cost a definitions load each (4-8 s on
    # 2 cores) and Great Expectations' 9 s import per check, and would compete for the cores the
    # landing object -> case path needs, so every run executes its steps in its own run process.
    executor=in_process_executor,
)
