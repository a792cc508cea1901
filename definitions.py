"""The single Dagster entry point: ``defs``. ``dagster dev`` in the repo root loads it (workspace.yaml).

``defs`` is built when Dagster loads it, not when this module is imported: importing it is cheap,
and the settings (IOT_LAKE_ENV), the asset modules and the dbt project are read on load. Everything
the code location holds is assembled here, in one place: the assets of each layer, their checks,
the jobs and schedules of each domain, the sensors, the resources of the environment and the
executor every job runs with. To get the Definitions in Python (a test, a script), call it:
``from definitions import defs; defs()``.
"""

import dagster as dg

# The control plane's packages live beside this file, not in site-packages. Dagster puts this
# directory (workspace.yaml's working_directory) on sys.path only while it imports this file, so the
# packages are bound here, at import (each __init__.py is a docstring, nothing more), and defs()
# imports their modules from them when Dagster loads it.
import assets  # noqa: F401
import jobs  # noqa: F401
import lib  # noqa: F401
import resources  # noqa: F401
import sensors  # noqa: F401


@dg.definitions
def defs() -> dg.Definitions:
    from assets.curated.daily import curated_features, curated_weather
    from assets.curated.history import curated_historical_readings
    from assets.curated.quality import quality_checks
    from assets.curated.telemetry import curated_telemetry
    from assets.dashboards import dashboard_specs
    from assets.landing.historian import device_registry, historical_readings
    from assets.landing.telemetry import landing_telemetry
    from assets.landing.weather import landing_weather
    from assets.ml.forecast import batch_forecast, forecast_model, forecast_training_data
    from assets.ops.check_results import check_results
    from assets.ops.deviations import deviations
    from assets.warehouse.dbt import warehouse_daily, warehouse_hourly, warehouse_models
    from iot_lake.settings import load_settings
    from jobs.curated import features_daily_job, features_daily_schedule
    from jobs.ingest import (
        historian_curated_job,
        historian_curated_schedule,
        historian_extract_job,
        historian_extract_schedule,
        telemetry_hourly_job,
        weather_daily_job,
    )
    from jobs.maintenance import delta_maintenance_job, delta_maintenance_schedule
    from jobs.ml import (
        forecast_refresh_job,
        forecast_refresh_schedule,
        forecast_training_job,
        forecast_training_schedule,
    )
    from jobs.ops import deviations_job
    from jobs.warehouse import warehouse_daily_job, warehouse_hourly_job, warehouse_job, warehouse_schedules
    from resources.environment import build_resources
    from sensors.alerts import check_failure_alerts, run_failure_alerts
    from sensors.automation import ops_automation_sensor
    from sensors.landing import landing_sensor

    settings = load_settings()
    return dg.Definitions(
        assets=[
            # landing
            landing_telemetry,
            landing_weather,
            device_registry,
            historical_readings,
            # curated
            curated_telemetry,
            curated_historical_readings,
            curated_weather,
            curated_features,
            # ml
            forecast_training_data,
            forecast_model,
            batch_forecast,
            # ops
            deviations,
            check_results,
            # warehouse (dbt)
            warehouse_models,
            warehouse_hourly,
            warehouse_daily,
            # dashboards (Superset, external: lineage only)
            *dashboard_specs(),
        ],
        asset_checks=quality_checks,
        jobs=[
            telemetry_hourly_job,
            weather_daily_job,
            historian_extract_job,
            historian_curated_job,
            features_daily_job,
            forecast_training_job,
            forecast_refresh_job,
            deviations_job,
            warehouse_job,
            warehouse_hourly_job,
            warehouse_daily_job,
            delta_maintenance_job,
        ],
        schedules=[
            historian_extract_schedule,
            historian_curated_schedule,
            features_daily_schedule,
            forecast_training_schedule,
            forecast_refresh_schedule,
            *warehouse_schedules(settings),
            delta_maintenance_schedule,
        ],
        sensors=[landing_sensor, ops_automation_sensor, run_failure_alerts, check_failure_alerts],
        resources=build_resources(settings),
        # Steps here only orchestrate: the heavy work runs in Spark and SageMaker (Pipes) or in one
        # Great Expectations validation. A process per step would cost a definitions load each (4-8 s on
        # 2 cores) and Great Expectations' 9 s import per check, and would compete for the cores the
        # landing object -> case path needs, so every run executes its steps in its own run process.
        executor=dg.in_process_executor,
    )
